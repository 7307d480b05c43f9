//! Object-based reverse mapping for anonymous memory (anon_vma).
//!
//! Instead of one entry per PTE, a page records the *object* it belongs to
//! (its anon_vma, in `mapping`) and its offset in it (`index`). Every VMA
//! that can map pages of the object carries the anon_vma's id and a
//! `pgoff`, so the page's address in that VMA is `start + (index − pgoff)
//! × 4096` — kept true when mremap moves a VMA, because the move keeps
//! `pgoff`. Finding a page's mappings means visiting the anon_vma's member
//! address spaces and, in each, the VMAs tagged with it: work at lookup,
//! none at fork or exit (the trade-off against pte chains).
//!
//! A new anonymous VMA reuses a mergeable neighbour's anon_vma (Linux's
//! `find_mergeable_anon_vma`), so VMAs still merge as Linux merges them.
//! A fork makes the child a member of every anon_vma its VMAs carry; an
//! exit leaves them. An anon_vma with no members is dropped.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use crate::mm::Mm;
use crate::sync::{new_mutex, AtomicU64, Mutex, Ordering};

/// One anon_vma: the address spaces that may map its pages.
pub struct AnonVma {
    /// Its id (what pages store in `mapping`, VMAs in `anon_vma`).
    pub id: u64,
    members: Mutex<Vec<(u64, Weak<Mm>)>>,
}

impl AnonVma {
    /// The member address spaces still alive.
    pub fn members(&self) -> Vec<Arc<Mm>> {
        self.members.lock().iter().filter_map(|(_, w)| w.upgrade()).collect()
    }
}

/// Bytes one anon_vma costs (the structure and one member slot).
pub const ANON_VMA_BYTES: u64 = 64;

/// Every anon_vma of the system.
pub struct AnonVmas {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<AnonVma>>>,
}

impl Default for AnonVmas {
    fn default() -> Self {
        Self::new()
    }
}

impl AnonVmas {
    /// None.
    pub fn new() -> AnonVmas {
        AnonVmas { next: AtomicU64::new(1), map: new_mutex(BTreeMap::new()) }
    }

    /// A new anon_vma with `mm` as its member.
    pub fn create(&self, mm: &Arc<Mm>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let av = Arc::new(AnonVma { id, members: new_mutex(alloc::vec![(mm.id(), Arc::downgrade(mm))]) });
        self.map.lock().insert(id, av);
        id
    }

    /// The anon_vma `id`, if it exists.
    pub fn get(&self, id: u64) -> Option<Arc<AnonVma>> {
        self.map.lock().get(&id).cloned()
    }

    /// Make `mm` a member of `id`.
    pub fn join(&self, id: u64, mm: &Arc<Mm>) {
        if let Some(av) = self.get(id) {
            let mut m = av.members.lock();
            if !m.iter().any(|(i, _)| *i == mm.id()) {
                m.push((mm.id(), Arc::downgrade(mm)));
            }
        }
    }

    /// `mm` (id) leaves `id`; an empty anon_vma is dropped.
    pub fn leave(&self, id: u64, mm: u64) {
        let mut map = self.map.lock();
        if let Some(av) = map.get(&id) {
            let empty = {
                let mut m = av.members.lock();
                m.retain(|(i, _)| *i != mm);
                m.is_empty()
            };
            if empty {
                map.remove(&id);
            }
        }
    }

    /// anon_vmas alive.
    pub fn count(&self) -> u64 {
        self.map.lock().len() as u64
    }
}
