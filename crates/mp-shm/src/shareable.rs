//! [`ShareableList`]: a fixed-length list of scalars, strings and bytes in one segment (CPython's
//! `multiprocessing.shared_memory.ShareableList`), with explicit lengths.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{SharedMemory, ShmError};

/// `magic | item count (u64)`, then zeroes up to `HEADER`.
const MAGIC: [u8; 8] = *b"mp-slst\x01";
const HEADER: usize = 64;
/// Per item: `kind (u32) | zero (u32) | length (u64) | capacity (u64) | offset of the bytes (u64)`.
const SLOT: usize = 32;
/// The room a scalar takes, and the least any item gets (so that every slot can hold any scalar, as in CPython).
const SCALAR: usize = 8;

const NONE: u32 = 0;
const INT: u32 = 1;
const FLOAT: u32 = 2;
const BOOL: u32 = 3;
const STR: u32 = 4;
const BYTES: u32 = 5;

/// One item of a [`ShareableList`]: the types CPython's `ShareableList` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// `None`.
    None,
    /// An `int` (64 bits, as CPython stores it).
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `bool`.
    Bool(bool),
    /// A `str`, kept as UTF-8 with its exact length: trailing NULs survive (CPython strips them, gh-96779).
    Str(String),
    /// `bytes`, with their exact length: trailing NULs survive (CPython strips them, gh-96779).
    Bytes(Vec<u8>),
}

impl Item {
    /// The item's kind and its stored bytes.
    fn encode(self) -> (u32, Vec<u8>) {
        match self {
            Item::None => (NONE, Vec::new()),
            Item::Int(v) => (INT, v.to_le_bytes().to_vec()),
            Item::Float(v) => (FLOAT, v.to_le_bytes().to_vec()),
            Item::Bool(v) => (BOOL, vec![u8::from(v)]),
            Item::Str(s) => (STR, s.into_bytes()),
            Item::Bytes(b) => (BYTES, b),
        }
    }

    fn decode(index: usize, kind: u32, bytes: Vec<u8>) -> Result<Item, ShmError> {
        let invalid = |reason| ShmError::InvalidItem { index, reason };
        let scalar = |bytes: &[u8]| <[u8; 8]>::try_from(bytes).map_err(|_| invalid("a scalar of the wrong length"));
        Ok(match kind {
            NONE => Item::None,
            INT => Item::Int(i64::from_le_bytes(scalar(&bytes)?)),
            FLOAT => Item::Float(f64::from_le_bytes(scalar(&bytes)?)),
            BOOL => match bytes[..] {
                [b] => Item::Bool(b != 0),
                _ => return Err(invalid("a bool of the wrong length")),
            },
            STR => Item::Str(String::from_utf8(bytes).map_err(|_| invalid("a str that is not UTF-8"))?),
            BYTES => Item::Bytes(bytes),
            _ => return Err(invalid("an unknown kind")),
        })
    }
}

impl From<()> for Item {
    fn from((): ()) -> Self {
        Item::None
    }
}

macro_rules! item_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {$(
        impl From<$t> for Item {
            fn from(v: $t) -> Self {
                Item::$variant($conv(v))
            }
        }
    )*};
}

item_from!(
    i64 => Int(|v| v),
    i32 => Int(i64::from),
    u32 => Int(i64::from),
    f64 => Float(|v| v),
    bool => Bool(|v| v),
    String => Str(|v| v),
    &str => Str(str::to_owned),
    Vec<u8> => Bytes(|v| v),
    &[u8] => Bytes(<[u8]>::to_vec),
);

/// A fixed-length list of [`Item`]s in one shared-memory segment (CPython's
/// `multiprocessing.shared_memory.ShareableList`).
///
/// Each item gets room for what it was created with (strings and bytes rounded up to 8 bytes, at least 8);
/// [`set`](Self::set) may put any item there that fits, of any kind, and a larger one is
/// [`ShmError::ItemTooLarge`]. Lengths are stored, so strings and bytes come back exactly as set.
///
/// Items are read and written by copying; a write is not atomic with respect to a read of the same item in
/// another process. Guard items that processes write concurrently with a lock (mp-sync); a read that races
/// a write may see a mix, which is [`ShmError::InvalidItem`] when it does not decode.
///
/// Like [`SharedMemory`], the creator owns the segment: call [`unlink`](Self::unlink) when done (the
/// resource tracker removes it when the process tree ends otherwise). Passed to a child, it travels as its
/// name and the child attaches.
///
/// ```
/// # mp_process::init();
/// use mp_shm::{Item, ShareableList};
///
/// let list = ShareableList::new([Item::from("howdy"), Item::from(&b"HoWdY\0"[..]), Item::from(-273.154),
///     Item::from(100), Item::None, Item::from(true), Item::from(42)])?;
/// list.set(1, &b"hi\0\0"[..])?;
/// assert_eq!(list.get(1)?, Item::Bytes(b"hi\0\0".to_vec()));
/// assert_eq!(list.index(&Item::from(42))?, Some(6));
/// assert!(list.set(0, "much too long").is_err()); // the room of "howdy": 8 bytes
/// list.unlink()?;
/// # Ok::<(), mp_shm::ShmError>(())
/// ```
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
}

impl ShareableList {
    /// A list of `items` in a new segment with a random name.
    pub fn new<I: Into<Item>>(items: impl IntoIterator<Item = I>) -> Result<Self, ShmError> {
        Self::build(items, SharedMemory::create)
    }

    /// A list of `items` in a new segment named `name`.
    pub fn create_named<I: Into<Item>>(name: &str, items: impl IntoIterator<Item = I>) -> Result<Self, ShmError> {
        Self::build(items, |size| SharedMemory::create_named(name, size))
    }

    fn build<I: Into<Item>>(
        items: impl IntoIterator<Item = I>,
        create: impl FnOnce(usize) -> Result<SharedMemory, ShmError>,
    ) -> Result<Self, ShmError> {
        let items: Vec<(u32, Vec<u8>)> = items.into_iter().map(|item| item.into().encode()).collect();
        let too_big = || ShmError::OutOfBounds { offset: 0, end: usize::MAX, size: usize::MAX };
        let table_end = items.len().checked_mul(SLOT).and_then(|t| t.checked_add(HEADER)).ok_or_else(too_big)?;
        let mut slots = Vec::with_capacity(items.len());
        let mut end = table_end.next_multiple_of(8);
        for (_, bytes) in &items {
            let capacity = bytes.len().max(SCALAR).checked_next_multiple_of(8).ok_or_else(too_big)?;
            slots.push((capacity, end));
            end = end.checked_add(capacity).ok_or_else(too_big)?;
        }
        let shm = create(end)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(&MAGIC);
        header[8..16].copy_from_slice(&(items.len() as u64).to_le_bytes());
        shm.write_at(0, &header)?;
        let list = ShareableList { shm, len: items.len() };
        for (index, ((kind, bytes), (capacity, offset))) in items.iter().zip(slots).enumerate() {
            let mut slot = [0u8; SLOT];
            slot[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
            slot[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
            list.shm.write_at(Self::slot_at(index), &slot)?;
            list.store(index, *kind, bytes, offset)?;
        }
        Ok(list)
    }

    /// Attaches to the list in segment `name`: [`ShmError::NotFound`] if there is none,
    /// [`ShmError::TypeMismatch`] if the segment holds something else.
    pub fn open(name: &str) -> Result<Self, ShmError> {
        let shm = SharedMemory::open(name)?;
        let mut header = [0u8; HEADER];
        let mismatch = |found: &str| ShmError::TypeMismatch {
            name: name.to_owned(),
            expected: "a ShareableList".to_owned(),
            found: found.to_owned(),
        };
        if shm.size() < HEADER {
            return Err(mismatch("a segment smaller than a ShareableList header"));
        }
        shm.read_at(0, &mut header)?;
        if header[..8] != MAGIC {
            return Err(mismatch("no ShareableList header"));
        }
        let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let fits = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(SLOT))
            .and_then(|t| t.checked_add(HEADER))
            .is_some_and(|end| end <= shm.size());
        if !fits {
            return Err(mismatch("a ShareableList header whose item table does not fit the segment"));
        }
        Ok(ShareableList { shm, len: len as usize })
    }

    /// Another handle to the same list.
    pub fn try_clone(&self) -> Result<Self, ShmError> {
        Self::open(self.name())
    }

    fn slot_at(index: usize) -> usize {
        HEADER + index * SLOT
    }

    /// `(kind, length, capacity, offset)` of item `index` ([`ShmError::IndexOutOfRange`] past the end).
    fn slot(&self, index: usize) -> Result<(u32, usize, usize, usize), ShmError> {
        if index >= self.len {
            return Err(ShmError::IndexOutOfRange { index, len: self.len });
        }
        let mut slot = [0u8; SLOT];
        self.shm.read_at(Self::slot_at(index), &mut slot)?;
        let word = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes")) as usize;
        let kind = u32::from_le_bytes(slot[..4].try_into().expect("4 bytes"));
        let (length, capacity, offset) = (word(8), word(16), word(24));
        if length > capacity {
            return Err(ShmError::InvalidItem { index, reason: "a length beyond its room" });
        }
        if offset.checked_add(capacity).is_none_or(|end| end > self.shm.size()) {
            return Err(ShmError::InvalidItem { index, reason: "a room outside the segment" });
        }
        Ok((kind, length, capacity, offset))
    }

    /// Writes the bytes, then kind and length together.
    fn store(&self, index: usize, kind: u32, bytes: &[u8], offset: usize) -> Result<(), ShmError> {
        self.shm.write_at(offset, bytes)?;
        let mut head = [0u8; 16];
        head[..4].copy_from_slice(&kind.to_le_bytes());
        head[8..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.shm.write_at(Self::slot_at(index), &head)
    }

    /// The number of items (fixed at creation).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `index` (CPython's `sl[index]`, without negative indices): [`ShmError::IndexOutOfRange`] past the
    /// end, [`ShmError::InvalidItem`] if its bytes do not decode (a read racing a write).
    pub fn get(&self, index: usize) -> Result<Item, ShmError> {
        let (kind, length, _, offset) = self.slot(index)?;
        let mut bytes = vec![0u8; length];
        self.shm.read_at(offset, &mut bytes)?;
        Item::decode(index, kind, bytes)
    }

    /// Replaces item `index` with `item`, of any kind, if it fits the item's room (CPython's
    /// `sl[index] = item`); otherwise [`ShmError::ItemTooLarge`], and the item is unchanged.
    pub fn set(&self, index: usize, item: impl Into<Item>) -> Result<(), ShmError> {
        let (_, _, capacity, offset) = self.slot(index)?;
        let (kind, bytes) = item.into().encode();
        if bytes.len() > capacity {
            return Err(ShmError::ItemTooLarge { index, size: bytes.len(), capacity });
        }
        self.store(index, kind, &bytes, offset)
    }

    /// The most bytes item `index` can hold (a scalar takes 8, a `str` its UTF-8 length).
    pub fn capacity(&self, index: usize) -> Result<usize, ShmError> {
        Ok(self.slot(index)?.2)
    }

    /// All items, in order.
    pub fn to_vec(&self) -> Result<Vec<Item>, ShmError> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// How many items equal `item` (CPython's `count`).
    pub fn count(&self, item: &Item) -> Result<usize, ShmError> {
        Ok(self.to_vec()?.iter().filter(|x| *x == item).count())
    }

    /// The first index holding `item`; `None` where CPython's `index` raises `ValueError`.
    pub fn index(&self, item: &Item) -> Result<Option<usize>, ShmError> {
        for i in 0..self.len {
            if self.get(i)? == *item {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The segment's name (what a child attaches to).
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The segment.
    pub fn shared_memory(&self) -> &SharedMemory {
        &self.shm
    }

    /// Removes the segment's name (see [`SharedMemory::unlink`]).
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.shm.unlink()
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList").field("name", &self.name()).field("items", &self.to_vec()).finish()
    }
}

/// Travels as its segment's name; the receiver attaches.
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.name().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ShareableList::open(&name).map_err(serde::de::Error::custom)
    }
}
