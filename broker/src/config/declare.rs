//! How a setting is declared: once, in one line of a [`settings!`] block, from which come its
//! flag, its config-file key, its resolved field, its default, its help text and how
//! `/varz` shows it.
//!
//! Owns: the [`settings!`] macro, the value kinds a setting can have ([`Num`], [`Size`],
//! [`Dur`], [`Path`], [`Choice`]) with their flag parsers, file readers and display, and the size and
//! duration text formats (`64KiB`, `250ms`).
//!
//! Never: holds a default or a limit of its own; the declarations in `config/mod.rs` do.
//!
//! A declaration reads
//!
//! ```text
//! /// What it is (the first line is the flag's help).
//! name: Type [Kind] = default_expression;
//! name: Type [Kind] = expression_of_earlier_settings, "how the help shows it";
//! ```
//!
//! The flag is `--name` (with `-` for `_`), the file key `name`; a flag given wins over the
//! file, which wins over the default. A default may use any setting declared before it
//! (in any earlier group) by its name, so derived defaults ("half of max_pending") are
//! written where the setting is.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::ValueParser;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How values of one kind are read from a flag and from the file, and shown.
pub(crate) trait Kind<T> {
    /// The placeholder in `--help` (`SIZE`, `DURATION`...).
    const VALUE_NAME: &'static str;
    /// The flag's parser.
    fn parser() -> ValueParser;
    /// Reads the value of a file key.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>;
    /// The value as the config file would spell it (help texts, `/varz`).
    fn show(v: &T) -> String;
    /// The value in `/varz`.
    fn serialize<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error>;
}

/// A plain value: a number, a string, an address. Read with `FromStr` from a flag, as
/// itself from the file; shown with `Display`.
pub(crate) struct Num;

impl<T> Kind<T> for Num
where
    T: FromStr + Display + Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + 'static,
    <T as FromStr>::Err: Display,
{
    const VALUE_NAME: &'static str = "N";
    fn parser() -> ValueParser {
        ValueParser::new(|s: &str| s.parse::<T>().map_err(|e| format!("`{s}`: {e}")))
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    fn show(v: &T) -> String {
        v.to_string()
    }
    fn serialize<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// A byte size: `4096`, `64KiB`, `1MiB` (see [`parse_size`]). A number in the file is bytes.
pub(crate) struct Size;

impl Kind<usize> for Size {
    const VALUE_NAME: &'static str = "SIZE";
    fn parser() -> ValueParser {
        ValueParser::new(parse_size)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => {
                usize::try_from(n).map_err(|_| serde::de::Error::custom("size is too large"))
            }
            NumberOrText::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }
    fn show(v: &usize) -> String {
        show_size(*v)
    }
    fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v as u64)
    }
}

/// A duration: `250ms`, `10s`, `2m`, `1h` (see [`parse_duration`]). A number in the file is
/// seconds. Shown as text in `/varz`, the way the file spells it.
pub(crate) struct Dur;

impl Kind<Duration> for Dur {
    const VALUE_NAME: &'static str = "DURATION";
    fn parser() -> ValueParser {
        ValueParser::new(parse_duration)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Duration::from_secs(n)),
            NumberOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
    fn show(v: &Duration) -> String {
        show_duration(*v)
    }
    fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&show_duration(*v))
    }
}

/// A file system path.
pub(crate) struct Path;

impl Kind<std::path::PathBuf> for Path {
    const VALUE_NAME: &'static str = "PATH";
    fn parser() -> ValueParser {
        ValueParser::path_buf()
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<std::path::PathBuf, D::Error> {
        std::path::PathBuf::deserialize(d)
    }
    fn show(v: &std::path::PathBuf) -> String {
        v.display().to_string()
    }
    fn serialize<S: Serializer>(v: &std::path::PathBuf, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.display().to_string())
    }
}

/// One of a fixed set of names (an enum deriving `clap::ValueEnum`, and serde with the same
/// lowercase names).
pub(crate) struct Choice;

impl<T> Kind<T> for Choice
where
    T: clap::ValueEnum + Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + 'static,
{
    const VALUE_NAME: &'static str = "NAME";
    fn parser() -> ValueParser {
        ValueParser::new(clap::builder::EnumValueParser::<T>::new())
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    fn show(v: &T) -> String {
        v.to_possible_value()
            .map(|p| p.get_name().to_string())
            .unwrap_or_default()
    }
    fn serialize<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// A value of the config file, read by its kind.
pub(crate) struct FileValue<K, T>(pub T, PhantomData<K>);

impl<K, T: std::fmt::Debug> std::fmt::Debug for FileValue<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, K: Kind<T>, T> Deserialize<'de> for FileValue<K, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::read(d).map(|v| FileValue(v, PhantomData))
    }
}

/// A resolved value, serialised by its kind (for `/varz`).
pub(crate) struct Shown<'a, K, T>(pub &'a T, pub PhantomData<K>);

impl<K: Kind<T>, T> Serialize for Shown<'_, K, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        K::serialize(self.0, s)
    }
}

/// The help line of a flag: its description and its default.
pub(crate) fn help(doc: &str, default: String) -> String {
    let doc: Vec<&str> = doc.split_whitespace().collect();
    let doc = doc.join(" ");
    format!("{} [default: {default}]", doc.trim_end_matches('.'))
}

/// Sizes and durations in the file may be a number or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// Reads a byte size: a plain number of bytes or a number with a unit
/// (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`; the unit is binary either way, case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 4096, 64KiB, 1MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Reads a duration: a number with a unit (`ms`, `s`, `m`, `h`); a plain number is seconds.
/// The authentication file's reader, so that the two config files read durations alike.
pub use tern_auth::parse_duration;

/// A size the way [`parse_size`] reads it, in the largest unit that divides it.
pub fn show_size(n: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A duration the way [`parse_duration`] reads it, in the largest unit that divides it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Declares the broker's settings: one line each. See the module header for a
/// declaration's form. It generates:
///
/// - the `clap` parser (`$Args`): the verbatim fields given in `args { }`, then one
///   optional `--flag` per setting, under its group's help heading, then each section's
///   flags (flattened);
/// - the config file (`$File`, unknown keys refused): the verbatim fields given in
///   `file { }`, one optional key per setting of the plain groups, and one `[section]`
///   table per section of `sections { }` (its own verbatim fields given in the
///   section's `file { }`);
/// - per group and per section, its resolved struct (`Debug`, `Clone`, `PartialEq`,
///   `Serialize` for `/varz`, `Default`), with a section's `derived { }` fields after
///   its settings;
/// - `$Groups`, every group and section resolved, and `$Groups::resolve(&args, &file)`,
///   which applies flag > file > default in declaration order (so a default can use
///   any setting declared before it, and a derived field any setting of its section and
///   the bindings `args` and `file` named in `resolve(args, file)`).
macro_rules! settings {
    (
        $(#[$args_meta:meta])*
        args $Args:ident { $($args_extra:tt)* }
        $(#[$file_meta:meta])*
        file $File:ident { $($file_extra:tt)* }
        $(#[$groups_meta:meta])*
        groups $Groups:ident resolve($args:ident, $file:ident);
        $(
            $(#[doc = $gdoc:literal])*
            group $group:ident : $G:ident, $heading:literal {
                $(
                    $(#[doc = $doc:literal])*
                    $field:ident : $ty:ty [$kind:ident] = $default:expr $(, $dhelp:literal)? ;
                )*
            }
            $(derived {
                $(
                    $(#[doc = $gddoc:literal])*
                    $gdfield:ident : $gdty:ty = $gdexpr:expr ;
                )*
            })?
        )*
        sections {$(
            $(#[doc = $sdoc:literal])*
            section $section:ident : $S:ident, $SArgs:ident, $SFile:ident, $sheading:literal {
                $(
                    $(#[doc = $sfdoc:literal])*
                    $sfield:ident : $sty:ty [$skind:ident] = $sdefault:expr $(, $sdhelp:literal)? ;
                )*
            }
            $(file { $($sfile_extra:tt)* })?
            $(derived {
                $(
                    $(#[doc = $ddoc:literal])*
                    $dfield:ident : $dty:ty = $dexpr:expr ;
                )*
            })?
        )*}
    ) => {
        #[derive(Debug, Default, clap::Parser)]
        $(#[$args_meta])*
        pub struct $Args {
            $($args_extra)*
            $($(
                #[arg(
                    long,
                    value_name = <$crate::config::declare::$kind as $crate::config::declare::Kind<$ty>>::VALUE_NAME,
                    value_parser = <$crate::config::declare::$kind as $crate::config::declare::Kind<$ty>>::parser(),
                    help = $crate::config::declare::help(
                        concat!($($doc, " "),*),
                        $crate::config::declare::settings!(@show $kind, $ty, $default $(, $dhelp)?),
                    ),
                    help_heading = $heading,
                )]
                pub $field: Option<$ty>,
            )*)*
            $(
                #[command(flatten)]
                pub $section: $SArgs,
            )*
        }

        $(
            #[derive(Debug, Default, clap::Args)]
            pub struct $SArgs {
                $(
                    #[arg(
                        long,
                        value_name = <$crate::config::declare::$skind as $crate::config::declare::Kind<$sty>>::VALUE_NAME,
                        value_parser = <$crate::config::declare::$skind as $crate::config::declare::Kind<$sty>>::parser(),
                        help = $crate::config::declare::help(
                            concat!($($sfdoc, " "),*),
                            $crate::config::declare::settings!(@show $skind, $sty, $sdefault $(, $sdhelp)?),
                        ),
                        help_heading = $sheading,
                    )]
                    pub $sfield: Option<$sty>,
                )*
            }

            #[derive(Debug, Default, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct $SFile {
                $($($sfile_extra)*)?
                $(
                    #[serde(default)]
                    $sfield: Option<$crate::config::declare::FileValue<$crate::config::declare::$skind, $sty>>,
                )*
            }
        )*

        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $(#[$file_meta])*
        pub(crate) struct $File {
            $($file_extra)*
            $($(
                #[serde(default)]
                $field: Option<$crate::config::declare::FileValue<$crate::config::declare::$kind, $ty>>,
            )*)*
            $(
                #[serde(default)]
                $section: Option<$SFile>,
            )*
        }

        $(
            $(#[doc = $gdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $G {
                $(
                    $(#[doc = $doc])*
                    pub $field: $ty,
                )*
                $($(
                    $(#[doc = $gddoc])*
                    pub $gdfield: $gdty,
                )*)?
            }

            impl serde::Serialize for $G {
                fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                    use serde::ser::SerializeMap;
                    let mut m = s.serialize_map(None)?;
                    $(
                        m.serialize_entry(
                            stringify!($field),
                            &$crate::config::declare::Shown::<$crate::config::declare::$kind, $ty>(
                                &self.$field,
                                std::marker::PhantomData,
                            ),
                        )?;
                    )*
                    $($(
                        m.serialize_entry(stringify!($gdfield), &self.$gdfield)?;
                    )*)?
                    m.end()
                }
            }

            impl Default for $G {
                fn default() -> Self {
                    $Groups::resolve(&$Args::default(), &$File::default()).$group
                }
            }
        )*

        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $S {
                $(
                    $(#[doc = $sfdoc])*
                    pub $sfield: $sty,
                )*
                $($(
                    $(#[doc = $ddoc])*
                    pub $dfield: $dty,
                )*)?
            }

            impl serde::Serialize for $S {
                fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                    use serde::ser::SerializeMap;
                    let mut m = s.serialize_map(None)?;
                    $(
                        m.serialize_entry(
                            stringify!($sfield),
                            &$crate::config::declare::Shown::<$crate::config::declare::$skind, $sty>(
                                &self.$sfield,
                                std::marker::PhantomData,
                            ),
                        )?;
                    )*
                    $($(
                        m.serialize_entry(stringify!($dfield), &self.$dfield)?;
                    )*)?
                    m.end()
                }
            }

            impl Default for $S {
                fn default() -> Self {
                    $Groups::resolve(&$Args::default(), &$File::default()).$section
                }
            }
        )*

        #[derive(Debug, Clone, PartialEq)]
        $(#[$groups_meta])*
        pub struct $Groups {
            $(pub $group: $G,)*
            $(pub $section: $S,)*
        }

        impl $Groups {
            /// Flag over file over default, in declaration order.
            #[allow(clippy::redundant_closure_call)]
            pub(crate) fn resolve($args: &$Args, $file: &$File) -> $Groups {
                $(
                    $(
                        let $field: $ty = match (&$args.$field, &$file.$field) {
                            (Some(v), _) => v.clone(),
                            (None, Some(v)) => v.0.clone(),
                            (None, None) => $default,
                        };
                    )*
                    $($(
                        let $gdfield: $gdty = $gdexpr;
                    )*)?
                    let $group = $G {
                        $($field: $field.clone(),)*
                        $($($gdfield,)*)?
                    };
                )*
                $(
                    let section_file = $file.$section.as_ref();
                    $(
                        let $sfield: $sty = match (
                            &$args.$section.$sfield,
                            section_file.and_then(|f| f.$sfield.as_ref()),
                        ) {
                            (Some(v), _) => v.clone(),
                            (None, Some(v)) => v.0.clone(),
                            (None, None) => $sdefault,
                        };
                    )*
                    $($(
                        let $dfield: $dty = $dexpr;
                    )*)?
                    let $section = $S {
                        $($sfield: $sfield.clone(),)*
                        $($($dfield,)*)?
                    };
                )*
                $Groups {
                    $($group,)*
                    $($section,)*
                }
            }
        }
    };
    (@show $kind:ident, $ty:ty, $default:expr, $dhelp:literal) => {
        String::from($dhelp)
    };
    (@show $kind:ident, $ty:ty, $default:expr) => {
        <$crate::config::declare::$kind as $crate::config::declare::Kind<$ty>>::show(&$default)
    };
}

pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_and_show() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        for (n, text) in [(4096, "4KiB"), (3 << 20, "3MiB"), (1000, "1000"), (0, "0")] {
            assert_eq!(show_size(n), text);
            assert_eq!(parse_size(text), Ok(n));
        }
        for (d, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
        ] {
            assert_eq!(show_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
