//! Intrusive doubly linked lists of metadata that lives in segment headers
//! (a class's spans with free objects, the page heap's segments), each list
//! guarded by its owner's lock.

use core::marker::PhantomData;
use core::ptr::null_mut;

/// The two links an element of a [`List`] carries.
pub(crate) struct Links<T> {
    pub(crate) prev: *mut T,
    pub(crate) next: *mut T,
}

impl<T> Links<T> {
    pub(crate) const NONE: Links<T> = Links { prev: null_mut(), next: null_mut() };
}

/// A type whose values carry [`Links`] for a kind of list, named by `Via`
/// when they carry more than one pair (a segment is on the list of every
/// segment and on the page heap's indexes at once).
pub(crate) trait Linked<Via = ()>: Sized {
    /// The links of `this` for lists of kind `Via`.
    ///
    /// # Safety
    /// `this` points to a live value.
    unsafe fn links(this: *mut Self) -> *mut Links<Self>;
}

/// A list: its first and last elements (null when empty), linked through
/// their links for `Via`.
pub(crate) struct List<T, Via = ()> {
    pub(crate) head: *mut T,
    pub(crate) tail: *mut T,
    via: PhantomData<fn() -> Via>,
}

impl<T: Linked<Via>, Via> List<T, Via> {
    pub(crate) const fn new() -> List<T, Via> {
        List { head: null_mut(), tail: null_mut(), via: PhantomData }
    }

    /// The links of `item` this list uses.
    ///
    /// # Safety
    /// `item` points to a live element.
    unsafe fn links(item: *mut T) -> *mut Links<T> {
        // SAFETY: forwarded from the caller.
        unsafe { <T as Linked<Via>>::links(item) }
    }

    /// The element after `item` (null after the last).
    ///
    /// # Safety
    /// `item` is on this list, and the caller holds what guards it.
    pub(crate) unsafe fn next(item: *mut T) -> *mut T {
        // SAFETY: forwarded from the caller.
        unsafe { (*Self::links(item)).next }
    }

    /// # Safety
    /// `item` is live and on no list, and the caller holds what guards
    /// this list; so for every element.
    pub(crate) unsafe fn push_front(&mut self, item: *mut T) {
        // SAFETY: `item` and the head are live elements the caller guards.
        unsafe {
            *Self::links(item) = Links { prev: null_mut(), next: self.head };
            if self.head.is_null() {
                self.tail = item;
            } else {
                (*Self::links(self.head)).prev = item;
            }
        }
        self.head = item;
    }

    /// # Safety
    /// As [`push_front`](Self::push_front).
    pub(crate) unsafe fn push_back(&mut self, item: *mut T) {
        // SAFETY: `item` and the tail are live elements the caller guards.
        unsafe {
            *Self::links(item) = Links { prev: self.tail, next: null_mut() };
            if self.tail.is_null() {
                self.head = item;
            } else {
                (*Self::links(self.tail)).next = item;
            }
        }
        self.tail = item;
    }

    /// # Safety
    /// `item` is on this list, and the caller holds what guards it.
    pub(crate) unsafe fn unlink(&mut self, item: *mut T) {
        // SAFETY: `item` and its neighbours are live elements the caller guards.
        unsafe {
            let Links { prev, next } = core::ptr::replace(Self::links(item), Links::NONE);
            if prev.is_null() {
                self.head = next;
            } else {
                (*Self::links(prev)).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*Self::links(next)).prev = prev;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        links: Links<Node>,
        value: u32,
    }

    impl Linked for Node {
        unsafe fn links(this: *mut Self) -> *mut Links<Self> {
            // SAFETY: forwarded from the caller.
            unsafe { &raw mut (*this).links }
        }
    }

    fn values(list: &List<Node>) -> Vec<u32> {
        let (mut out, mut at) = (Vec::new(), list.head);
        while !at.is_null() {
            // SAFETY: the test's nodes outlive the list.
            unsafe {
                out.push((*at).value);
                at = List::next(at);
            }
        }
        out
    }

    #[test]
    fn pushes_and_unlinks_keep_both_ends() {
        let mut nodes: Vec<Node> = (0..4).map(|value| Node { links: Links::NONE, value }).collect();
        let n: Vec<*mut Node> = nodes.iter_mut().map(|node| node as *mut Node).collect();
        let mut list = List::new();
        // SAFETY: every node is live and on at most this list.
        unsafe {
            list.push_back(n[1]);
            list.push_front(n[0]);
            list.push_back(n[2]);
            list.push_back(n[3]);
            assert_eq!(values(&list), [0, 1, 2, 3]);
            list.unlink(n[0]);
            list.unlink(n[3]);
            assert_eq!(values(&list), [1, 2]);
            assert_eq!((list.head, list.tail), (n[1], n[2]));
            list.unlink(n[2]);
            list.unlink(n[1]);
            assert!(list.head.is_null() && list.tail.is_null());
            list.push_front(n[3]);
            assert_eq!((list.head, list.tail), (n[3], n[3]));
        }
    }
}
