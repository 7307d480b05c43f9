//! Native fault-benchmark target (in progress).
