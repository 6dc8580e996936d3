//! mp-shm across real processes, under the start method `cargo xtask test` selects.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use mp_process::{Handle, JoinError, Process};
use mp_shm::{Item, RawArray, RawValue, ShareableList, SharedMemory, ShmError};
use support::eventually;

fn main() {
    mp_process::init();
    support::run(support::cases![
        segments_cross_into_children,
        names_and_sizes_are_checked,
        unlink_twice_is_not_found,
        attaching_never_unlinks,
        bounds_and_alignment_are_checked,
        leaked_segment_is_removed_when_its_tree_ends,
        segment_of_a_killed_creator_is_removed,
        segment_left_by_this_process_is_removed_at_exit,
        each_child_squares_its_index,
        wrong_type_or_size_is_an_error,
        atomic_increments_are_exact,
        raw_values_cross_into_children,
        shareable_lists_cross_into_children,
        shareable_list_errors_are_typed,
        creators_killed_at_any_moment_leave_nothing,
        a_tracker_killed_with_its_tree_is_swept_by_the_next,
        a_manager_scope_unlinks_what_it_made,
    ]);
}

fn in_dev_shm(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

fn write_pattern(shm: SharedMemory) -> usize {
    let pattern: Vec<u8> = (0..shm.size()).map(|i| (i % 251) as u8).collect();
    shm.write_at(0, &pattern).unwrap();
    assert!(!shm.is_owner(), "a segment received by a child is attached, not owned");
    shm.size()
}

fn segments_cross_into_children() {
    let shm = SharedMemory::create(100_000).unwrap();
    assert!(shm.name().starts_with("mp_"));
    assert!(shm.is_owner());
    let mut p = Process::new(write_pattern, shm.try_clone().unwrap());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 100_000);
    let expected: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    assert_eq!(shm.to_vec(), expected);
    shm.unlink().unwrap();
}

fn names_and_sizes_are_checked() {
    for bad in ["", "a/b", &"x".repeat(251), "nul\0byte", ".."] {
        assert!(matches!(SharedMemory::create_named(bad, 10), Err(ShmError::InvalidName { .. })), "{bad:?}");
        assert!(matches!(SharedMemory::open(bad), Err(ShmError::InvalidName { .. })), "{bad:?}");
    }
    assert!(matches!(SharedMemory::create(0), Err(ShmError::ZeroSize)));
    let name = format!("mp_test_{}", std::process::id());
    let shm = SharedMemory::create_named(&name, 10).unwrap();
    assert_eq!(shm.name(), name);
    assert!(matches!(SharedMemory::create_named(&name, 10), Err(ShmError::AlreadyExists(n)) if n == name));
    shm.unlink().unwrap();
    assert!(matches!(SharedMemory::open(&name), Err(ShmError::NotFound(n)) if n == name));
}

fn unlink_twice_is_not_found() {
    let shm = SharedMemory::create(8).unwrap();
    shm.unlink().unwrap();
    assert!(matches!(shm.unlink(), Err(ShmError::NotFound(_))));
    // The memory itself lives on while mapped.
    shm.write_at(0, b"still ok").unwrap();
}

fn attach_and_leave(name: String) -> u8 {
    let shm = SharedMemory::open(&name).unwrap();
    let mut byte = [0u8; 1];
    shm.read_at(0, &mut byte).unwrap();
    byte[0]
}

fn attaching_never_unlinks() {
    let shm = SharedMemory::create(4).unwrap();
    shm.write_at(0, &[7]).unwrap();
    for _ in 0..2 {
        let mut p = Process::new(attach_and_leave, shm.name().to_owned());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 7);
    }
    assert!(in_dev_shm(shm.name()), "an attacher's exit must not remove the segment");
    SharedMemory::open(shm.name()).unwrap();
    shm.unlink().unwrap();
    assert!(!in_dev_shm(shm.name()));
}

fn bounds_and_alignment_are_checked() {
    let shm = SharedMemory::create(16).unwrap();
    assert!(matches!(shm.write_at(10, &[0; 7]), Err(ShmError::OutOfBounds { offset: 10, end: 17, size: 16 })));
    assert!(matches!(shm.read_at(usize::MAX, &mut [0; 2]), Err(ShmError::OutOfBounds { .. })));
    assert!(matches!(shm.atomic_u64(4), Err(ShmError::Misaligned { offset: 4, align: 8 })));
    assert!(matches!(shm.atomic_u64(16), Err(ShmError::OutOfBounds { .. })));
    shm.atomic_u64(8).unwrap().store(5, std::sync::atomic::Ordering::SeqCst);
    let array = RawArray::<u32>::create(3).unwrap();
    assert_eq!(array.get(3), None);
    assert!(matches!(array.set(3, 1), Err(ShmError::OutOfBounds { .. })));
    assert!(matches!(array.copy_from_slice(2, &[1, 2]), Err(ShmError::OutOfBounds { .. })));
    shm.unlink().unwrap();
    array.unlink().unwrap();
}

fn create_and_keep(_: ()) -> String {
    let shm = SharedMemory::create(1024).unwrap();
    shm.name().to_owned() // not unlinked: the tree's tracker must remove it
}

fn leaked_segment_is_removed_when_its_tree_ends() {
    let mut p = Process::new(create_and_keep, ());
    p.start().unwrap();
    let name = p.join().unwrap();
    assert!(eventually(Duration::from_secs(5), || !in_dev_shm(&name)), "{name} outlived its creator's tree");
}

fn create_then_hang(pipe: Handle) {
    let shm = SharedMemory::create(1024).unwrap();
    File::from(pipe).write_all(shm.name().as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn segment_of_a_killed_creator_is_removed() {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut p = Process::new(create_then_hang, Handle::from(OwnedFd::from(writer)));
    p.start().unwrap();
    let mut name = String::new();
    reader.read_to_string(&mut name).unwrap();
    assert!(in_dev_shm(&name));
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(JoinError::Signaled { signal: 9, .. })));
    assert!(eventually(Duration::from_secs(5), || !in_dev_shm(&name)), "{name} outlived its SIGKILLed creator");
}

fn segment_left_by_this_process_is_removed_at_exit() {
    // Not unlinked on purpose: the harness fails this case if anything is left in /dev/shm after it.
    let shm = SharedMemory::create(4096).unwrap();
    shm.write_at(0, b"left behind").unwrap();
    assert!(in_dev_shm(shm.name()));
}

fn square_own_index((array, index): (RawArray<u64>, usize)) {
    array.set(index, (index * index) as u64).unwrap();
}

fn each_child_squares_its_index() {
    let array = RawArray::<u64>::create(5).unwrap();
    let mut children: Vec<Process<()>> =
        (0..5).map(|i| Process::new(square_own_index, (array.try_clone().unwrap(), i))).collect();
    for p in &mut children {
        p.start().unwrap();
    }
    for p in &mut children {
        p.join().unwrap();
    }
    assert_eq!(array.to_vec(), [0, 1, 4, 9, 16]);
    array.unlink().unwrap();
}

fn wrong_type_or_size_is_an_error() {
    let array = RawArray::<u32>::create(4).unwrap();
    match RawArray::<u64>::open(array.name()) {
        Err(ShmError::TypeMismatch { expected, found, .. }) => {
            assert_eq!(expected, "[u64]");
            assert_eq!(found, "[u32; 4]");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert!(matches!(RawArray::<i32>::open(array.name()), Err(ShmError::TypeMismatch { .. })));
    assert!(matches!(RawValue::<u32>::open(array.name()), Err(ShmError::TypeMismatch { .. })));
    assert_eq!(RawArray::<u32>::open(array.name()).unwrap().len(), 4);
    let plain = SharedMemory::create(128).unwrap();
    assert!(matches!(RawArray::<u8>::open(plain.name()), Err(ShmError::TypeMismatch { .. })));
    let tiny = SharedMemory::create(8).unwrap();
    assert!(matches!(RawValue::<u8>::open(tiny.name()), Err(ShmError::TypeMismatch { .. })));
    for shm in [array.shared_memory(), &plain, &tiny] {
        shm.unlink().unwrap();
    }
}

fn add_many((counter, n): (RawValue<u64>, u64)) {
    for _ in 0..n {
        counter.fetch_add(1);
    }
}

fn atomic_increments_are_exact() {
    let counter = RawValue::<u64>::zeroed().unwrap();
    let mut workers: Vec<Process<()>> =
        (0..2).map(|_| Process::new(add_many, (counter.try_clone().unwrap(), 100_000))).collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    for p in &mut workers {
        p.join().unwrap();
    }
    assert_eq!(counter.load(), 200_000);
    assert_eq!(counter.compare_exchange(200_000, 7), Ok(200_000));
    assert_eq!(counter.compare_exchange(200_000, 8), Err(7));
    assert_eq!(counter.swap(9), 7);
    counter.unlink().unwrap();
}

fn flip((flag, point): (RawValue<bool>, RawArray<f64>)) -> bool {
    flag.set(!flag.get());
    point.set(1, point.get(0).unwrap() * 2.0).unwrap();
    flag.get()
}

fn raw_values_cross_into_children() {
    let flag = RawValue::new(false).unwrap();
    let point = RawArray::from_slice(&[1.5f64, 0.0]).unwrap();
    let mut p = Process::new(flip, (flag.try_clone().unwrap(), point.try_clone().unwrap()));
    p.start().unwrap();
    assert!(p.join().unwrap());
    assert!(flag.get());
    assert_eq!(point.to_vec(), [1.5, 3.0]);
    // Foreign bytes never make an invalid bool.
    flag.shared_memory().write_at(64, &[0xff]).unwrap();
    assert!(flag.get());
    flag.unlink().unwrap();
    point.unlink().unwrap();
}

/// In a child: reads every item, then rewrites some, each within its room.
fn rewrite_list(list: ShareableList) -> Vec<Item> {
    let seen = list.to_vec().unwrap();
    list.set(0, "hi").unwrap();
    list.set(1, &b"\0a\0\0"[..]).unwrap();
    list.set(2, "12345678").unwrap();
    list.set(3, 2.5).unwrap();
    list.set(4, 7).unwrap();
    seen
}

fn shareable_lists_cross_into_children() {
    let items = [
        Item::from("howdy"),
        Item::from(&b"HoWdY\0\0"[..]),
        Item::from(-273.154),
        Item::from(100),
        Item::None,
        Item::from(true),
        Item::from("x\0"),
    ];
    let list = ShareableList::new(items.clone()).unwrap();
    assert_eq!(list.len(), 7);
    let mut p = Process::new(rewrite_list, list.try_clone().unwrap());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), items, "the child sees the items, trailing NULs included");
    assert_eq!(
        list.to_vec().unwrap(),
        [
            Item::from("hi"),
            Item::from(&b"\0a\0\0"[..]),
            Item::from("12345678"),
            Item::from(2.5),
            Item::from(7),
            Item::Bool(true),
            Item::Str("x\0".to_owned()),
        ]
    );
    assert_eq!(list.count(&Item::Bool(true)).unwrap(), 1);
    assert_eq!(list.index(&Item::from(7)).unwrap(), Some(4));
    assert_eq!(list.index(&Item::from(8)).unwrap(), None);
    let name = list.name().to_owned();
    list.unlink().unwrap();
    assert!(!in_dev_shm(&name));
}

fn shareable_list_errors_are_typed() {
    let list = ShareableList::new([Item::from("abc"), Item::from(1), Item::from(&[0u8; 20][..])]).unwrap();
    assert_eq!(list.capacity(0).unwrap(), 8, "strings get at least 8 bytes");
    assert_eq!(list.capacity(2).unwrap(), 24, "rounded up to 8");
    assert!(matches!(list.set(0, "123456789"), Err(ShmError::ItemTooLarge { index: 0, size: 9, capacity: 8 })));
    assert_eq!(list.get(0).unwrap(), Item::from("abc"), "a refused item leaves the old one");
    assert!(matches!(list.get(3), Err(ShmError::IndexOutOfRange { index: 3, len: 3 })));
    assert!(matches!(list.set(3, 1), Err(ShmError::IndexOutOfRange { index: 3, len: 3 })));
    list.set(2, &[7u8; 24][..]).unwrap();
    list.set(1, "ab").unwrap();
    assert_eq!(list.get(1).unwrap(), Item::from("ab"), "any kind that fits");
    // Item 0's kind word (the first slot, after the 64-byte header) overwritten by something else.
    list.shared_memory().write_at(64, &99u32.to_le_bytes()).unwrap();
    assert!(matches!(list.get(0), Err(ShmError::InvalidItem { index: 0, .. })));
    assert!(matches!(list.to_vec(), Err(ShmError::InvalidItem { index: 0, .. })));
    list.set(0, "abc").unwrap();
    assert_eq!(list.get(0).unwrap(), Item::from("abc"), "a set repairs the item");

    let array = RawArray::<u64>::create(16).unwrap();
    assert!(matches!(ShareableList::open(array.name()), Err(ShmError::TypeMismatch { .. })));
    array.unlink().unwrap();
    assert!(matches!(ShareableList::open("mp-no-such-list"), Err(ShmError::NotFound(_))));
    assert!(matches!(ShareableList::create_named(list.name(), [1]), Err(ShmError::AlreadyExists(_))));

    let empty = ShareableList::new(Vec::<Item>::new()).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec().unwrap(), []);
    let named = format!("mp-test-list-{}", std::process::id());
    let again = ShareableList::create_named(&named, [Item::None]).unwrap();
    assert_eq!(ShareableList::open(&named).unwrap().get(0).unwrap(), Item::None);
    for l in [list, empty, again] {
        let name = l.name().to_owned();
        l.unlink().unwrap();
        assert!(!in_dev_shm(&name));
    }
}

/// Creates segments (and leaks them) as fast as it can, until killed.
fn create_forever(_: ()) {
    loop {
        let shm = SharedMemory::create(4096).unwrap();
        std::mem::forget(shm); // left for the tracker
    }
}

/// Creators SIGKILLed at random moments — during their first creation too, while the tracker itself is being
/// started — leave nothing in /dev/shm once the tree has ended (the harness checks /dev/shm after the case).
fn creators_killed_at_any_moment_leave_nothing() {
    let mut seed = std::process::id() as u64;
    for _ in 0..200 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut p = Process::new(create_forever, ());
        p.start().unwrap();
        std::thread::sleep(Duration::from_micros(seed >> 54)); // 0 to 1 ms
        p.kill().unwrap();
        let _ = p.join();
    }
}

/// In a tree of its own (the tracker setting cleared, so a tracker of its own starts): creates a segment and
/// reports its name and its tracker's pid.
fn own_tree_segment(_: ()) -> (String, u32) {
    mp_process::set_inherited("mp-shm.tracker", None);
    mp_process::set_inherited("mp-shm.tracker-id", None);
    let shm = SharedMemory::create(4096).unwrap();
    let name = shm.name().to_owned();
    std::mem::forget(shm);
    let id = mp_process::inherited("mp-shm.tracker-id").expect("the tracker's identity");
    (name, u32::from_str_radix(id.split('-').next().unwrap(), 16).unwrap())
}

/// When a tree's tracker is killed with the tree, nobody cleans up that tree: the next tracker to start does,
/// for the trees whose tracker is gone — never for a live one's.
fn a_tracker_killed_with_its_tree_is_swept_by_the_next() {
    let live = SharedMemory::create(4096).unwrap(); // this tree's: its tracker lives
    // Spawned, so that the child does not share this process's connection to its tracker (a forked one would).
    let spawn = mp_process::get_context(mp_process::StartMethod::Spawn).unwrap();
    let mut p = spawn.process(own_tree_segment, ());
    p.start().unwrap();
    let (orphan, tracker) = p.join().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(tracker as i32, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(5), || !support::process_alive(tracker)));
    assert!(in_dev_shm(&orphan), "left behind: its tracker is gone");
    // Another tree starts a tracker, which sweeps.
    let mut q = spawn.process(own_tree_segment, ());
    q.start().unwrap();
    let (theirs, _) = q.join().unwrap();
    assert!(eventually(Duration::from_secs(5), || !in_dev_shm(&orphan)), "the next tracker swept it");
    assert!(in_dev_shm(live.name()), "a live tree's segment is never touched");
    assert!(theirs != orphan);
    live.unlink().unwrap();
}

/// Reads what the parent wrote into the segment and the list, by name.
fn read_by_name((shm, list): (String, String)) -> (Vec<u8>, Item) {
    let shm = SharedMemory::open(&shm).unwrap();
    let mut bytes = vec![0u8; 5];
    shm.read_at(0, &mut bytes).unwrap();
    (bytes, ShareableList::open(&list).unwrap().get(1).unwrap())
}

/// Everything a `SharedMemoryManager` made is unlinked when its scope ends, by a panic too; a child could
/// attach while it lasted.
fn a_manager_scope_unlinks_what_it_made() {
    let names = std::panic::catch_unwind(|| {
        let smm = mp_shm::SharedMemoryManager::new();
        let shm = smm.shared_memory(64).unwrap();
        shm.write_at(0, b"hello").unwrap();
        let list = smm.shareable_list(["a", "b"]).unwrap();
        let mut p = Process::new(read_by_name, (shm.name().to_owned(), list.name().to_owned()));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), (b"hello".to_vec(), Item::Str("b".into())));
        assert_eq!(smm.names().len(), 2);
        let names = (shm.name().to_owned(), list.name().to_owned());
        std::panic::panic_any(names);
    })
    .unwrap_err();
    let (shm, list) = *names.downcast::<(String, String)>().unwrap();
    assert!(!in_dev_shm(&shm) && !in_dev_shm(&list), "unlinked as the scope unwound");
    assert!(matches!(SharedMemory::open(&shm), Err(ShmError::NotFound(_))));
}
