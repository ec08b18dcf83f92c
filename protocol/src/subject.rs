//! Subject rules, in one place.
//!
//! A subject is a non-empty sequence of tokens separated by `.`; no token is empty and no
//! subject contains whitespace (space, tab, CR, LF) or NUL. In a subscription *filter*, a
//! token that is exactly `*` matches any one token and a token that is exactly `>` (allowed
//! only as the last token) matches one or more trailing tokens. A `*` or `>` inside a longer
//! token (`a*b`) is an ordinary character. Publish subjects must be literal: no wildcard
//! tokens.
//!
//! Never: allocates. Everything here works on borrowed bytes.

/// Why a subject or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject is empty")]
    Empty,
    #[error("subject has an empty token")]
    EmptyToken,
    #[error("subject contains whitespace or a control character")]
    BadCharacter,
    #[error("publish subject contains a wildcard token")]
    Wildcard,
    #[error("'>' is only allowed as the last token")]
    FullWildcardNotLast,
}

/// Checks a subject a message is published to: valid and literal.
pub fn validate_publish(subject: &[u8]) -> Result<(), SubjectError> {
    todo!("{subject:?}")
}

/// Checks a subscription filter: valid, wildcards allowed (`>` last only).
pub fn validate_filter(filter: &[u8]) -> Result<(), SubjectError> {
    todo!("{filter:?}")
}

/// True when a (valid) filter has no wildcard token, so it matches exactly one subject.
pub fn is_literal(filter: &[u8]) -> bool {
    todo!("{filter:?}")
}

/// True when the (valid) filter matches the (valid, literal) subject.
pub fn matches(filter: &[u8], subject: &[u8]) -> bool {
    todo!("{filter:?} {subject:?}")
}

/// The tokens of a subject, in order.
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> {
    subject.split(|b| *b == b'.')
}
