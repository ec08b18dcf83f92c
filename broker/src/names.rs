//! Enums whose variants have fixed names: the labels of a counter (`closed_by_reason`,
//! `budget_drops`, ...) and the values of a query parameter (`/connz?sort=`).
//!
//! Owns: [`named_enum!`], which declares such an enum from one line per variant, so that
//! the names, their order and the variants can never disagree.
//!
//! Never: holds state; it is a declaration helper only.

/// Declares a field-less enum with a name per variant: `Variant => "name",`.
///
/// It gets `NAMES` (the names in variant order, so a variant's value `as usize` indexes
/// it, as a labelled counter's array does), `name()` and `parse()` (the variant named so).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[doc = $doc:literal])* $variant:ident => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[doc = $doc])* $variant,)*
        }

        #[allow(dead_code)]
        impl $name {
            /// The names, indexed by the variant's value.
            pub const NAMES: [&'static str; [$($text),*].len()] = [$($text),*];
            /// Every variant, in the order of [`Self::NAMES`].
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant),*];

            /// This variant's name.
            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The variant named `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                Self::NAMES
                    .iter()
                    .position(|n| *n == text)
                    .map(|i| Self::ALL[i])
            }
        }
    };
}
pub(crate) use named_enum;
