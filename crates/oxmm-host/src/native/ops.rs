//! Native op-script backend (in progress).
