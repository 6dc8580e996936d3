//! [`Target`]: what a process (or a pool's task) can run — a function item or a capture-less closure with its
//! arguments, as Python's `target=` and `args=`.

/// A function that can be a process target, called with an argument value `Args`.
///
/// Implemented for function items and closures without captures of up to five parameters. `Args` is the
/// single argument itself for one parameter, `()` for none, and a tuple for several — Python's `args=`:
///
/// | target | `args` |
/// |---|---|
/// | `fn hello()` | `()` |
/// | `fn square(x: u64) -> u64` | `7` |
/// | `fn add(a: i32, b: i32) -> i32` | `(1, 2)` |
///
/// `Marker` only tells the implementations apart; it is inferred.
pub trait Target<Marker, Args>: Copy + Send + 'static {
    /// The return type.
    type Output;
    /// Calls the target.
    fn call(self, args: Args) -> Self::Output;
}

impl<F, R> Target<fn() -> R, ()> for F
where
    F: FnOnce() -> R + Copy + Send + 'static,
{
    type Output = R;
    fn call(self, (): ()) -> R {
        self()
    }
}

impl<F, A, R> Target<fn(A) -> R, A> for F
where
    F: FnOnce(A) -> R + Copy + Send + 'static,
{
    type Output = R;
    fn call(self, a: A) -> R {
        self(a)
    }
}

macro_rules! tuple_targets {
    ($(($($name:ident),+)),+) => {$(
        impl<F, R, $($name),+> Target<fn($($name),+) -> R, ($($name,)+)> for F
        where
            F: FnOnce($($name),+) -> R + Copy + Send + 'static,
        {
            type Output = R;
            #[allow(non_snake_case, reason = "the type names double as variable names")]
            fn call(self, ($($name,)+): ($($name,)+)) -> R {
                self($($name),+)
            }
        }
    )+};
}

tuple_targets!((A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E));
