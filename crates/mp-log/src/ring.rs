//! A child's ring: a memory file shared with the parent, one producer (the child, its threads taking turns
//! under a lock of its own) and one consumer (the parent's listener), with no lock shared between them.
//!
//! Layout: `head` (bytes the reader has consumed) at 0, `tail` (bytes the writer has published) at 64 — each on
//! a cache line of its own — and `waiting` (the reader is about to sleep) at 128; records from 192, each a
//! `u32` length then the bytes, padded to 8, wrapping around the end of the data area. The writer publishes a
//! record by storing `tail` after the record is complete, so a child killed halfway through one leaves nothing
//! visible of it; the reader frees room by storing `head` after copying a record out.
//!
//! Waking the reader: before it sleeps, the reader stores `waiting = 1`, then looks at `tail` once more; after
//! publishing, the writer looks at `waiting` and, if set, clears it and sends one byte on its connection. Both
//! sides store before they load, with sequential consistency, so one of them sees the other: no record is
//! left unseen by a sleeping reader, and a steady stream costs the writer no system call.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sys;

const HEAD: usize = 0;
const TAIL: usize = 64;
const WAITING: usize = 128;
const DATA: usize = 192;

/// One ring, mapped in this process.
#[derive(Debug)]
pub(crate) struct Ring {
    map: memmap2::MmapRaw,
    /// Bytes of record space.
    cap: u64,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Published; `wake` says the reader was about to sleep and must be woken.
    Done { wake: bool },
    /// No room.
    Full,
}

/// What a pop found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Popped {
    Record,
    Empty,
    /// The ring's words make no sense (a length beyond what was published): reading stops.
    Corrupt,
}

fn padded(len: u64) -> u64 {
    (4 + len).next_multiple_of(8)
}

impl Ring {
    /// A new ring of `size` bytes in all, and the memory file to hand to the reader.
    pub(crate) fn create(size: usize) -> io::Result<(Ring, OwnedFd)> {
        let size = size.max(DATA + 4096).next_multiple_of(4096);
        let (fd, map) = sys::ring_memory(size)?;
        Ok((Ring { map, cap: (size - DATA) as u64 }, fd))
    }

    /// The ring in memory file `fd` (the reader's side).
    pub(crate) fn open(fd: &OwnedFd) -> io::Result<Ring> {
        let map = sys::map_ring(fd)?;
        if map.len() < DATA + 4096 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a ring too small"));
        }
        let cap = (map.len() - DATA) as u64;
        Ok(Ring { map, cap })
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is HEAD or TAIL, 8-aligned and inside the mapping (which is page-aligned and longer than
        // DATA); the mapping lives as long as `self`; the words are only ever accessed atomically, by both sides.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(at).cast()) }
    }

    fn waiting(&self) -> &AtomicU32 {
        // SAFETY: as in `word64`, for the 4-byte word at WAITING.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(WAITING).cast()) }
    }

    /// Copies `bytes` into the data area at ring position `at` (wrapping).
    ///
    /// # Safety
    ///
    /// The range is free: between `tail` and `head + cap`, written by this writer alone.
    unsafe fn write_at(&self, at: u64, bytes: &[u8]) {
        let start = (at % self.cap) as usize;
        let first = bytes.len().min(self.cap as usize - start);
        // SAFETY: both pieces lie inside the data area (start < cap, first ≤ cap - start, the rest < cap); by the
        // caller's guarantee the reader does not read them until `tail` is stored.
        unsafe {
            let data = self.map.as_mut_ptr().add(DATA);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
        }
    }

    /// Copies `len` bytes from ring position `at` (wrapping) into `out`.
    ///
    /// # Safety
    ///
    /// The range is published: between `head` and `tail`, which the writer does not write until `head` moves.
    unsafe fn read_at(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let start = (at % self.cap) as usize;
        let first = len.min(self.cap as usize - start);
        out.clear();
        out.reserve(len);
        // SAFETY: as in `write_at`, for reading; `out` has room for `len` bytes.
        unsafe {
            let data = self.map.as_ptr().add(DATA);
            let to = out.as_mut_ptr();
            std::ptr::copy_nonoverlapping(data.add(start), to, first);
            std::ptr::copy_nonoverlapping(data, to.add(first), len - first);
            out.set_len(len);
        }
    }

    /// Publishes one record (the writer; one thread at a time).
    pub(crate) fn push(&self, payload: &[u8]) -> Pushed {
        let need = padded(payload.len() as u64);
        let tail = self.word64(TAIL).load(Ordering::Relaxed);
        let head = self.word64(HEAD).load(Ordering::Acquire);
        if need > self.cap - tail.wrapping_sub(head).min(self.cap) {
            return Pushed::Full;
        }
        // SAFETY: [tail, tail + need) is free: the reader has consumed up to `head`, and tail + need ≤ head + cap.
        unsafe {
            self.write_at(tail, &(payload.len() as u32).to_le_bytes());
            self.write_at(tail + 4, payload);
        }
        self.word64(TAIL).store(tail + need, Ordering::SeqCst);
        let wake = self.waiting().load(Ordering::SeqCst) != 0 && self.waiting().swap(0, Ordering::SeqCst) != 0;
        Pushed::Done { wake }
    }

    /// Takes the next record into `out` (the reader).
    pub(crate) fn pop(&self, out: &mut Vec<u8>) -> Popped {
        let head = self.word64(HEAD).load(Ordering::Relaxed);
        let tail = self.word64(TAIL).load(Ordering::Acquire);
        let published = tail.wrapping_sub(head);
        if published == 0 {
            return Popped::Empty;
        }
        if published < 8 || published > self.cap {
            return Popped::Corrupt;
        }
        let mut len = Vec::with_capacity(4);
        // SAFETY: [head, head + 4) is published (published ≥ 8).
        unsafe { self.read_at(head, 4, &mut len) };
        let len = u64::from(u32::from_le_bytes(len[..4].try_into().expect("4 bytes")));
        if padded(len) > published {
            return Popped::Corrupt;
        }
        // SAFETY: [head + 4, head + 4 + len) is published (padded(len) ≤ published).
        unsafe { self.read_at(head + 4, len as usize, out) };
        self.word64(HEAD).store(head + padded(len), Ordering::Release);
        Popped::Record
    }

    /// Whether nothing is published (the reader, after announcing it will sleep).
    pub(crate) fn is_empty(&self) -> bool {
        self.word64(TAIL).load(Ordering::SeqCst) == self.word64(HEAD).load(Ordering::Relaxed)
    }

    /// The reader announces that it is about to sleep (`true`) or is awake (`false`).
    pub(crate) fn set_waiting(&self, on: bool) {
        self.waiting().store(u32::from(on), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_wrap_around_and_read_back_in_order() {
        let (writer, fd) = Ring::create(DATA + 4096).unwrap();
        let reader = Ring::open(&fd).unwrap();
        let mut out = Vec::new();
        let mut next_read = 0u32;
        for i in 0u32..10_000 {
            let record = vec![(i % 251) as u8; (i % 300) as usize + 1];
            while writer.push(&record) == Pushed::Full {
                assert_eq!(reader.pop(&mut out), Popped::Record);
                assert_eq!(out, vec![(next_read % 251) as u8; (next_read % 300) as usize + 1]);
                next_read += 1;
            }
        }
        while reader.pop(&mut out) == Popped::Record {
            next_read += 1;
        }
        assert_eq!(next_read, 10_000);
        assert!(reader.is_empty());
    }

    #[test]
    fn a_sleeping_reader_is_woken_once() {
        let (writer, fd) = Ring::create(8192).unwrap();
        let reader = Ring::open(&fd).unwrap();
        assert_eq!(writer.push(b"a"), Pushed::Done { wake: false });
        reader.set_waiting(true);
        assert_eq!(writer.push(b"b"), Pushed::Done { wake: true });
        assert_eq!(writer.push(b"c"), Pushed::Done { wake: false }, "one wake-up per sleep");
    }
}
