//! Calling a function by offset: the anchor, [`FnOffset`], [`conjure`], and the build identity that makes
//! offsets sound. Published (with [`catch_panic`](crate::job::catch_panic)) as [`mp_process::offset`](crate::offset).

use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;
use crate::target::Target;

/// The fixed point in the executable that offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d70_5f61_6e63_686f)
}

fn anchor_address() -> i64 {
    anchor as fn() -> u64 as usize as i64
}

/// A function pointer of type `F`, as an offset from an anchor in the executable: valid in every process that
/// runs the same build (see [`build_id`]). It serializes as one integer.
pub struct FnOffset<F> {
    raw: i64,
    _f: PhantomData<fn() -> F>,
}

impl<F: Copy> FnOffset<F> {
    /// The offset of `f`, a function pointer (`my_fn as fn(u32) -> u32`).
    ///
    /// # Panics
    ///
    /// At compile time, when `F` is not pointer-sized (then it cannot be a function pointer).
    pub fn of(f: F) -> Self {
        const { assert!(size_of::<F>() == size_of::<usize>(), "FnOffset takes a function pointer") };
        // SAFETY: `F` is pointer-sized (asserted above) and `Copy`; its bits are read as an address, nothing
        // more. Resolving it back is what needs care (see `resolve`).
        let address = unsafe { std::mem::transmute_copy::<F, usize>(&f) };
        FnOffset { raw: (address as i64).wrapping_sub(anchor_address()), _f: PhantomData }
    }

    /// The function pointer back.
    ///
    /// # Safety
    ///
    /// This offset was made by [`FnOffset::of`] with this same `F`, a function pointer type, in a process
    /// running the same build of the program as this one: compare [`build_id`]s first, or receive offsets
    /// only from a process that did. Any other offset resolves to an address that is not a function of
    /// type `F`, and calling it is undefined behaviour.
    pub unsafe fn resolve(self) -> F {
        let address = anchor_address().wrapping_add(self.raw) as usize;
        // SAFETY: by the caller's guarantee, `address` is the address of a function of type `F` in this image,
        // and `F` is a function pointer (pointer-sized, asserted in `of`, which made this offset).
        unsafe { std::mem::transmute_copy::<usize, F>(&address) }
    }
}

impl<F> FnOffset<F> {
    /// The offset as an integer (for a wire format of one's own).
    pub fn to_raw(self) -> i64 {
        self.raw
    }

    /// An offset from its integer. Safe: only [`resolve`](FnOffset::resolve) is not.
    pub fn from_raw(raw: i64) -> Self {
        FnOffset { raw, _f: PhantomData }
    }
}

impl<F> Clone for FnOffset<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for FnOffset<F> {}

impl<F> PartialEq for FnOffset<F> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<F> Eq for FnOffset<F> {}

impl<F> fmt::Debug for FnOffset<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnOffset({:+#x})", self.raw)
    }
}

impl<F> Serialize for FnOffset<F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de, F> Deserialize<'de> for FnOffset<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(FnOffset::from_raw)
    }
}

/// The value of the target type `F` (a function item or a closure without captures), made from its type alone.
///
/// A trampoline monomorphised for `F` calls this to get the function it stands for. Every [`Target`] that
/// can be conjured is zero-sized: checked at compile time.
pub fn conjure<F, M, A>() -> F
where
    F: Target<M, A>,
{
    const { assert!(size_of::<F>() == 0, "a target must be a fn item or a closure without captures") };
    // SAFETY: `F` is zero-sized (asserted at compile time), so it has no bytes to initialise, and it is a
    // function item or a closure that captures nothing of size (the only zero-sized `FnOnce + Copy` types on
    // stable Rust), whose only invariant is to exist: a value of it existed in the process that sent us its
    // type.
    unsafe { std::mem::zeroed() }
}

/// What identifies this build of the program (see [`build_id`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildId {
    bytes: &'static [u8],
    gnu: bool,
}

impl BuildId {
    /// The identity's bytes: the build-id note's descriptor (20 bytes for the linker's usual SHA-1), or
    /// the 8 bytes of the content hash.
    pub fn as_bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// Whether this is the linker's `NT_GNU_BUILD_ID` note (else a hash of the executable's contents).
    pub fn is_gnu_build_id(&self) -> bool {
        self.gnu
    }

    /// A 64-bit digest of the identity, which the start-up messages of re-executed children carry.
    pub fn fingerprint(&self) -> u64 {
        sys::fnv1a(sys::FNV_OFFSET, self.bytes)
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({}{self})", if self.gnu { "gnu:" } else { "content:" })
    }
}

/// This build's identity: the ELF `NT_GNU_BUILD_ID` note the linker writes (Rust's toolchains on Linux do by
/// default; read from memory, no file access), or, for a binary without one, an FNV-1a hash of the
/// executable's contents, computed once. Equal in every copy of the binary (on another machine, under
/// another name or modification time), different in every other build.
pub fn build_id() -> BuildId {
    static ID: OnceLock<BuildId> = OnceLock::new();
    *ID.get_or_init(|| match sys::build_id() {
        Some(bytes) => BuildId { bytes, gnu: true },
        None => {
            let hash = sys::exe_content_hash(c"/proc/self/exe").unwrap_or(0);
            BuildId { bytes: Box::leak(Box::new(hash.to_le_bytes())), gnu: false }
        }
    })
}

/// [`build_id`]'s fingerprint, computed once (the fork server computes it before forking, so its children
/// inherit it).
pub(crate) fn fingerprint() -> u64 {
    static FINGERPRINT: OnceLock<u64> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| build_id().fingerprint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_is_the_linkers_note() {
        let id = build_id();
        assert!(id.is_gnu_build_id(), "{id:?}");
        assert!(id.as_bytes().len() >= 8, "{id:?}");
        // The same bytes `readelf -n` shows: the note in the file matches the one in memory.
        let file = std::fs::read("/proc/self/exe").unwrap();
        assert!(file.windows(id.as_bytes().len()).any(|w| w == id.as_bytes()));
    }

    #[test]
    fn notes_are_parsed_with_their_padding() {
        let mut notes = Vec::new();
        // An ABI tag note (name "GNU\0", type 1), then a build id (type 3) with a 5-byte descriptor.
        for (kind, desc) in [(1u32, &[0u8, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0][..]), (3, &[1, 2, 3, 4, 5])] {
            notes.extend_from_slice(&4u32.to_ne_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
            notes.extend_from_slice(&kind.to_ne_bytes());
            notes.extend_from_slice(b"GNU\0");
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(sys::find_gnu_build_id(&notes), Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(sys::find_gnu_build_id(&notes[..notes.len() - 8]), None, "truncated");
        assert_eq!(sys::find_gnu_build_id(&[0xff; 12]), None, "absurd sizes");
    }

    fn triple(x: u32) -> u32 {
        x * 3
    }

    #[test]
    fn offsets_resolve_and_serialize() {
        let offset = FnOffset::of(triple as fn(u32) -> u32);
        let bytes = postcard::to_stdvec(&offset).unwrap();
        let back: FnOffset<fn(u32) -> u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, offset);
        // SAFETY: made by `FnOffset::of` with this type in this process.
        assert_eq!(unsafe { back.resolve() }(5), 15);
    }
}
