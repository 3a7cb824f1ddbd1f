//! The compile-time check that a `#[field(default = ...)]` literal fits the field's type.
//!
//! `#[plugin]` checks plain scalar, array and map fields itself. For other types (records,
//! aliases) it emits a function bounded by `FieldType: DefaultFits<LiteralKind>` and a call of
//! it, both spanned at the literal, so a default of the wrong kind fails to compile with the
//! message below, pointing at the literal.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::marker::PhantomData;

/// A string literal default.
pub struct StringLiteral;
/// An integer literal default.
pub struct IntegerLiteral;
/// A float literal default.
pub struct FloatLiteral;
/// A boolean literal default.
pub struct BooleanLiteral;
/// `[]`.
pub struct EmptyArrayLiteral;
/// `{}`.
pub struct MapLiteral;
/// `[a, b]`, of elements of kind `T`.
pub struct ArrayLiteral<T>(PhantomData<T>);

/// Implemented when a literal of kind `L` is a valid default for `Self`.
#[diagnostic::on_unimplemented(
    message = "this default does not fit a field of type `{Self}`",
    label = "a `{L}` cannot be the default of a `{Self}` field"
)]
pub trait DefaultFits<L> {}

impl DefaultFits<StringLiteral> for String {}
impl DefaultFits<BooleanLiteral> for bool {}
macro_rules! ints {
    ($($t:ty),*) => {$(impl DefaultFits<IntegerLiteral> for $t {})*};
}
ints!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize, f32, f64);
impl DefaultFits<FloatLiteral> for f32 {}
impl DefaultFits<FloatLiteral> for f64 {}
impl<T: DefaultFits<L>, L> DefaultFits<L> for Option<T> {}
impl<T: DefaultFits<L>, L> DefaultFits<ArrayLiteral<L>> for Vec<T> {}
impl<T: DefaultFits<L>, L> DefaultFits<ArrayLiteral<L>> for BTreeSet<T> {}
impl<T: DefaultFits<L>, L, S> DefaultFits<ArrayLiteral<L>> for HashSet<T, S> {}
impl<T> DefaultFits<EmptyArrayLiteral> for Vec<T> {}
impl<T> DefaultFits<EmptyArrayLiteral> for BTreeSet<T> {}
impl<T, S> DefaultFits<EmptyArrayLiteral> for HashSet<T, S> {}
impl<T> DefaultFits<MapLiteral> for BTreeMap<String, T> {}
impl<T, S> DefaultFits<MapLiteral> for HashMap<String, T, S> {}

/// Compiles only when `L` fits `T` (what `#[plugin]` emits, spelled out).
///
/// ```
/// use kong_pdk::schema::literal::{IntegerLiteral, default_fits};
/// default_fits::<Option<u32>, IntegerLiteral>();
/// ```
pub const fn default_fits<T: DefaultFits<L> + ?Sized, L>() {}
