//! CPython's `ShareableList` example: a child changes items of a list the parent made; trailing NUL bytes
//! survive the trip (CPython strips them).
//!
//! Expected output (checked by `cargo xtask test`):
//! ```text
//! [Str("howdy"), Bytes([72, 111, 87, 100, 89]), Float(-273.154), Int(100), None, Bool(true), Int(42)]
//! child sees 7 items, the first "howdy"
//! [Str("hi"), Bytes([72, 111, 87, 100, 89]), Float(-273.154), Int(100), None, Bool(true), Bytes([0, 1, 0, 0])]
//! 42 is now at None; "hi" at Some(0)
//! ```

use mp_process::Process;
use mp_shm::{Item, ShareableList};

/// Replaces the first item (it has room for 8 bytes) and the last (an int: 8 bytes).
fn change(list: ShareableList) -> String {
    let first = list.get(0).expect("in range");
    list.set(0, "hi").expect("fits");
    list.set(6, &[0u8, 1, 0, 0][..]).expect("fits");
    format!(
        "child sees {} items, the first {:?}",
        list.len(),
        match first {
            Item::Str(s) => s,
            other => format!("{other:?}"),
        }
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let list = ShareableList::new([
        Item::from("howdy"),
        Item::from(&b"HoWdY"[..]),
        Item::from(-273.154),
        Item::from(100),
        Item::None,
        Item::from(true),
        Item::from(42),
    ])?;
    println!("{:?}", list.to_vec()?);
    let mut child = Process::new(change, list.try_clone()?);
    child.start()?;
    println!("{}", child.join()?);
    println!("{:?}", list.to_vec()?);
    println!("42 is now at {:?}; \"hi\" at {:?}", list.index(&Item::from(42))?, list.index(&Item::from("hi"))?);
    list.unlink()?;
    Ok(())
}
