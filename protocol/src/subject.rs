//! Subject rules, in one place.
//!
//! A subject is a non-empty sequence of tokens separated by `.`; no token is empty and no
//! subject contains whitespace (space, tab, CR, LF), NUL or any other ASCII control character
//! (bytes below `0x20`, and `0x7f`). In a subscription *filter*, a token that is exactly `*`
//! matches any one token and a token that is exactly `>` (allowed only as the last token)
//! matches one or more trailing tokens. A `*` or `>` inside a longer token (`a*b`) is an
//! ordinary character. Publish subjects must be literal: no wildcard tokens.
//!
//! The decoders also cap the number of tokens (`max_subject_tokens` in both ports'
//! `Limits`, default [`DEFAULT_MAX_TOKENS`]) with [`validate_publish_max`] and
//! [`validate_filter_max`]: every structure keyed by subjects costs at least a step per
//! token, and a filter of tens of thousands of tokens is never a reasonable one.
//!
//! Never: allocates. Everything here works on borrowed bytes.

/// Why a subject or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject has no bytes at all.
    #[error("subject is empty")]
    Empty,
    /// Two dots in a row, or a leading or trailing dot. Reported before any wildcard
    /// error.
    #[error("subject has an empty token")]
    EmptyToken,
    /// Whitespace, NUL or another ASCII control character. Reported before any wildcard
    /// error.
    #[error("subject contains whitespace or a control character")]
    BadCharacter,
    /// A `*` or `>` token in a subject that must be literal.
    #[error("publish subject contains a wildcard token")]
    Wildcard,
    /// A `>` token that is not the last token of a filter.
    #[error("'>' is only allowed as the last token")]
    FullWildcardNotLast,
    /// More tokens than the receiver accepts. Reported as soon as token `max + 1` is
    /// reached; an empty token or a bad character before it is reported instead.
    #[error("subject has too many tokens (max {max})")]
    TooManyTokens {
        /// The most tokens accepted.
        max: usize,
    },
}

/// The default cap on tokens per subject or filter that the decoders apply.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// True for the bytes no subject may contain: whitespace, NUL and the other ASCII control
/// characters.
#[inline]
const fn is_bad_byte(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

/// Checks the shape shared by subjects and filters; `wildcards` says whether `*` and `>`
/// tokens are allowed, `max_tokens` how many tokens.
fn validate(subject: &[u8], wildcards: bool, max_tokens: usize) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    // Shape errors (empty token, bad byte) win over wildcard errors wherever they stand.
    let mut wildcard_error = None;
    let mut tokens = tokens(subject).enumerate().peekable();
    while let Some((i, token)) = tokens.next() {
        if i == max_tokens {
            // Not a step further: the rest may be arbitrarily long.
            return Err(SubjectError::TooManyTokens { max: max_tokens });
        }
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if token.iter().any(|&b| is_bad_byte(b)) {
            return Err(SubjectError::BadCharacter);
        }
        if wildcard_error.is_none() {
            wildcard_error = match token {
                b"*" | b">" if !wildcards => Some(SubjectError::Wildcard),
                b">" if tokens.peek().is_some() => Some(SubjectError::FullWildcardNotLast),
                _ => None,
            };
        }
    }
    wildcard_error.map_or(Ok(()), Err)
}

/// Checks a subject a message is published to: valid and literal. No cap on tokens.
pub fn validate_publish(subject: &[u8]) -> Result<(), SubjectError> {
    validate(subject, false, usize::MAX)
}

/// Checks a subscription filter: valid, wildcards allowed (`>` last only). No cap on
/// tokens.
pub fn validate_filter(filter: &[u8]) -> Result<(), SubjectError> {
    validate(filter, true, usize::MAX)
}

/// [`validate_publish`], and at most `max_tokens` tokens.
///
/// Every publish's subject goes through here: one pass over the bytes settles the common,
/// valid case; anything it does not accept goes to [`validate`], which names the fault
/// (and whose rules win: the two agree on what is valid, a property test says so).
#[inline]
pub fn validate_publish_max(subject: &[u8], max_tokens: usize) -> Result<(), SubjectError> {
    if is_plain_publish(subject, max_tokens) {
        return Ok(());
    }
    validate(subject, false, max_tokens)
}

/// True when `subject` is non-empty, has no empty token, no bad byte, no `*` or `>` token
/// and at most `max_tokens` tokens: a valid publish subject, in one pass. (A space is a bad
/// byte: [`plain_publish_len`] stops at one, short of the whole subject.)
#[inline]
fn is_plain_publish(subject: &[u8], max_tokens: usize) -> bool {
    plain_publish_len(subject, max_tokens) == Some(subject.len())
}

/// The length of the valid publish subject at the front of `bytes`, which ends at the
/// first space or at the end of `bytes`, in one pass: [`is_plain_publish`] for a whole
/// subject, and the text decoder's `PUB` fast path (a control line's
/// first argument). `None` when what precedes that end is not a plain publish subject
/// (empty, an empty token, a bad byte such as a tab, a wildcard token, over `max_tokens`
/// tokens); the caller then leaves the line to the general parse, which names the fault.
#[inline]
pub(crate) fn plain_publish_len(bytes: &[u8], max_tokens: usize) -> Option<usize> {
    // Tokens ended so far, and where the current one starts.
    let (mut ended, mut start) = (0usize, 0usize);
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        // One load per ordinary byte; a space is a bad byte, so it is looked at here.
        if !SEPARATOR_OR_BAD[usize::from(b)] {
            continue;
        }
        if b == b' ' {
            end = i;
            break;
        }
        if b != b'.' || !is_plain_token(&bytes[start..i]) {
            return None;
        }
        ended += 1;
        start = i + 1;
    }
    (is_plain_token(&bytes[start..end]) && ended < max_tokens).then_some(end)
}

/// By byte value: `.` or a byte no subject may hold ([`is_bad_byte`]).
const SEPARATOR_OR_BAD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b == b'.' as usize || is_bad_byte(b as u8);
        b += 1;
    }
    table
};

/// A token of a literal subject: not empty and not a wildcard.
#[inline]
fn is_plain_token(token: &[u8]) -> bool {
    !token.is_empty() && token != b"*" && token != b">"
}

/// [`validate_filter`], and at most `max_tokens` tokens.
pub fn validate_filter_max(filter: &[u8], max_tokens: usize) -> Result<(), SubjectError> {
    validate(filter, true, max_tokens)
}

/// True when a (valid) filter has no wildcard token, so it matches exactly one subject.
pub fn is_literal(filter: &[u8]) -> bool {
    !tokens(filter).any(|t| t == b"*" || t == b">")
}

/// True when the (valid) filter matches the (valid, literal) subject.
///
/// The result for invalid input is unspecified (but it never panics): a `>` token matches
/// all remaining tokens wherever it stands.
pub fn matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut filter = tokens(filter);
    let mut subject = tokens(subject);
    loop {
        match (filter.next(), subject.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) => return true,
            (Some(f), Some(s)) => {
                if f != b"*" && f != s {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The tokens of a subject, in order.
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> {
    subject.split(|b| *b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publish_accepts_literals() {
        for s in [
            &b"foo"[..],
            b"foo.bar",
            b"a.b.c.d.e",
            b"a*",
            b"*b",
            b"a>b",
            b">>",
            b"**",
            b"_INBOX.abc123",
            b"caf\xc3\xa9.x",
            b"$SYS.REQ",
        ] {
            assert_eq!(validate_publish(s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn empty_subject() {
        assert_eq!(validate_publish(b""), Err(SubjectError::Empty));
        assert_eq!(validate_filter(b""), Err(SubjectError::Empty));
    }

    #[test]
    fn empty_tokens() {
        for s in [
            &b"."[..],
            b".foo",
            b"foo.",
            b"foo..bar",
            b"..",
            b"a.b.",
            b"*..>",
        ] {
            assert_eq!(validate_publish(s), Err(SubjectError::EmptyToken), "{s:?}");
            assert_eq!(validate_filter(s), Err(SubjectError::EmptyToken), "{s:?}");
        }
    }

    #[test]
    fn bad_characters() {
        for s in [
            &b"foo bar"[..],
            b"foo\tbar",
            b"foo\r",
            b"\nfoo",
            b"fo\0o",
            b"a.b\x01",
            b"a.\x1f",
            b"a\x7f",
            b" ",
        ] {
            assert_eq!(
                validate_publish(s),
                Err(SubjectError::BadCharacter),
                "{s:?}"
            );
            assert_eq!(validate_filter(s), Err(SubjectError::BadCharacter), "{s:?}");
        }
    }

    #[test]
    fn publish_refuses_wildcards() {
        for s in [&b"*"[..], b">", b"foo.*", b"*.foo", b"foo.>", b"a.*.b"] {
            assert_eq!(validate_publish(s), Err(SubjectError::Wildcard), "{s:?}");
        }
    }

    #[test]
    fn filters() {
        for s in [
            &b"*"[..],
            b">",
            b"foo.*",
            b"*.foo",
            b"foo.>",
            b"a.*.b",
            b"*.*.>",
            b"a*.b>",
        ] {
            assert_eq!(validate_filter(s), Ok(()), "{s:?}");
        }
        for s in [&b">.foo"[..], b"a.>.b", b">.>"] {
            assert_eq!(
                validate_filter(s),
                Err(SubjectError::FullWildcardNotLast),
                "{s:?}"
            );
        }
    }

    #[test]
    fn token_cap() {
        let subject = |n: usize| vec!["a"; n].join(".");
        let filter = |n: usize| vec!["*"; n].join(".");
        let too_many = Err(SubjectError::TooManyTokens { max: 4 });
        assert_eq!(validate_publish_max(subject(4).as_bytes(), 4), Ok(()));
        assert_eq!(validate_publish_max(subject(5).as_bytes(), 4), too_many);
        assert_eq!(validate_filter_max(filter(4).as_bytes(), 4), Ok(()));
        assert_eq!(validate_filter_max(filter(5).as_bytes(), 4), too_many);
        assert_eq!(validate_filter_max(b"a.b.c.>", 4), Ok(()));
        assert_eq!(validate_filter_max(b"a.b.c.d.>", 4), too_many);
        // A wildcard in a publish subject is reported after the count: the cap first.
        assert_eq!(validate_publish_max(b"a.*.c.d.e", 4), too_many);
        assert_eq!(
            validate_publish_max(b"a.*.c.d", 4),
            Err(SubjectError::Wildcard)
        );
        // An error in the tokens before the cap is reported instead; none after it is
        // even looked at.
        assert_eq!(
            validate_publish_max(b"a..c.d.e", 4),
            Err(SubjectError::EmptyToken)
        );
        assert_eq!(validate_publish_max(b"a.b.c.d.e..", 4), too_many);
        // 32,767 tokens: refused at the 257th, the rest never looked at.
        assert_eq!(
            validate_filter_max(filter(32_767).as_bytes(), DEFAULT_MAX_TOKENS),
            Err(SubjectError::TooManyTokens {
                max: DEFAULT_MAX_TOKENS
            })
        );
        assert_eq!(validate_filter(filter(32_767).as_bytes()), Ok(()));
        assert_eq!(
            SubjectError::TooManyTokens { max: 256 }.to_string(),
            "subject has too many tokens (max 256)"
        );
    }

    #[test]
    fn literal_filters() {
        assert!(is_literal(b"foo.bar"));
        assert!(is_literal(b"a*.b>"));
        assert!(!is_literal(b"foo.*"));
        assert!(!is_literal(b">"));
        assert!(!is_literal(b"a.*.b"));
    }

    #[test]
    fn matching() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"foo", b"foo", true),
            (b"foo", b"bar", false),
            (b"foo", b"foo.bar", false),
            (b"foo.bar", b"foo", false),
            (b"*", b"foo", true),
            (b"*", b"foo.bar", false),
            (b"foo.*", b"foo.bar", true),
            (b"foo.*", b"foo", false),
            (b"foo.*", b"foo.bar.baz", false),
            (b"*.bar", b"foo.bar", true),
            (b"*.*", b"a.b", true),
            (b">", b"foo", true),
            (b">", b"foo.bar.baz", true),
            (b"foo.>", b"foo", false),
            (b"foo.>", b"foo.bar", true),
            (b"foo.>", b"foo.bar.baz", true),
            (b"foo.>", b"bar.baz", false),
            (b"*.>", b"a", false),
            (b"*.>", b"a.b", true),
            (b"a*", b"a*", true),
            (b"a*", b"ab", false),
            (b"a>", b"a>", true),
            (b"a>", b"a.b", false),
        ];
        for &(f, s, want) in cases {
            assert_eq!(matches(f, s), want, "{f:?} {s:?}");
        }
    }

    /// A straightforward reference matcher over token lists.
    fn reference_match(filter: &[&str], subject: &[&str]) -> bool {
        match (filter.split_first(), subject.split_first()) {
            (None, None) => true,
            (Some((&">", _)), Some(_)) => true,
            (Some((f, fr)), Some((s, sr))) => (*f == "*" || f == s) && reference_match(fr, sr),
            _ => false,
        }
    }

    fn literal_token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            "[a-z0-9_$*>-]{1,4}",
        ]
        .prop_filter("must be literal", |t| t != "*" && t != ">")
    }

    fn filter_tokens() -> impl Strategy<Value = Vec<String>> {
        (
            prop::collection::vec(
                prop_oneof![3 => literal_token(), 1 => Just("*".to_string())],
                1..5,
            ),
            any::<bool>(),
        )
            .prop_map(|(mut toks, full)| {
                if full {
                    toks.push(">".to_string());
                }
                toks
            })
    }

    proptest! {
        #[test]
        fn matches_agrees_with_reference(
            filter in filter_tokens(),
            subject in prop::collection::vec(literal_token(), 1..6),
        ) {
            let f = filter.join(".");
            let s = subject.join(".");
            prop_assert_eq!(validate_filter(f.as_bytes()), Ok(()));
            prop_assert_eq!(validate_publish(s.as_bytes()), Ok(()));
            let fr: Vec<&str> = filter.iter().map(String::as_str).collect();
            let sr: Vec<&str> = subject.iter().map(String::as_str).collect();
            prop_assert_eq!(matches(f.as_bytes(), s.as_bytes()), reference_match(&fr, &sr));
        }

        #[test]
        fn literal_filter_matches_exactly_itself(
            a in prop::collection::vec(literal_token(), 1..6),
            b in prop::collection::vec(literal_token(), 1..6),
        ) {
            let a = a.join(".");
            let b = b.join(".");
            prop_assert!(is_literal(a.as_bytes()));
            prop_assert!(matches(a.as_bytes(), a.as_bytes()));
            prop_assert_eq!(matches(a.as_bytes(), b.as_bytes()), a == b);
        }

        /// The one-pass check accepts exactly the subjects the full validation accepts,
        /// over bytes biased towards dots, wildcards and bad bytes.
        #[test]
        fn the_one_pass_publish_check_agrees_with_the_full_one(
            s in prop::collection::vec(
                prop_oneof![Just(b'.'), Just(b'*'), Just(b'>'), Just(b' '), Just(b'a'), any::<u8>()],
                0..16,
            ),
            max in 1usize..6,
        ) {
            prop_assert_eq!(
                is_plain_publish(&s, max),
                validate(&s, false, max).is_ok(),
                "{:?} max {}", String::from_utf8_lossy(&s), max
            );
        }

        /// The subject at the front of a line is read as the one-pass check reads the
        /// bytes before the first space.
        #[test]
        fn the_subject_length_agrees_with_the_one_pass_check(
            s in prop::collection::vec(
                prop_oneof![Just(b'.'), Just(b'*'), Just(b'>'), Just(b' '), Just(b'a'), any::<u8>()],
                0..16,
            ),
            max in 1usize..6,
        ) {
            let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
            let expected = is_plain_publish(&s[..end], max).then_some(end);
            prop_assert_eq!(plain_publish_len(&s, max), expected);
        }

        #[test]
        fn validation_never_panics_and_publish_implies_filter(s in prop::collection::vec(any::<u8>(), 0..24)) {
            let p = validate_publish(&s);
            let f = validate_filter(&s);
            if p.is_ok() {
                prop_assert_eq!(f, Ok(()));
                prop_assert!(is_literal(&s));
                prop_assert!(matches(&s, &s));
            }
            if f.is_ok() && is_literal(&s) {
                prop_assert_eq!(p, Ok(()));
            }
            let _ = matches(&s, &s);
        }
    }
}
