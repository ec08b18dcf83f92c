//! Incremental UTF-8 validation of a text message that arrives in pieces.
//!
//! Owns: the at most three bytes of a character cut by a frame or read boundary.
//!
//! Never: copies a piece or allocates; a piece is checked where it lies.

use std::str;

/// Validates a byte sequence given in pieces, failing as soon as it cannot be UTF-8.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    /// The start of a character cut at the end of the last piece.
    partial: [u8; 4],
    partial_len: usize,
}

/// Not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

impl Utf8Validator {
    /// Checks the next piece.
    pub(crate) fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            // Complete the cut character with the first bytes of this piece.
            let have = self.partial_len;
            let take = piece.len().min(4 - have);
            let mut joined = self.partial;
            joined[have..have + take].copy_from_slice(&piece[..take]);
            let valid_to = match str::from_utf8(&joined[..have + take]) {
                Ok(_) => have + take,
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to(),
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still cut: the piece was shorter than the rest of the character.
                    self.partial = joined;
                    self.partial_len = have + take;
                    return Ok(());
                }
            };
            // `valid_to > have`: the cut bytes alone are never a whole character.
            piece = &piece[valid_to - have..];
            self.partial_len = 0;
        }
        match str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let cut = &piece[e.valid_up_to()..];
                self.partial[..cut.len()].copy_from_slice(cut);
                self.partial_len = cut.len();
                Ok(())
            }
        }
    }

    /// Ends the sequence: fails when it stops inside a character. Ready for the next one.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let cut = self.partial_len > 0;
        self.partial_len = 0;
        if cut {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn a_character_cut_in_every_place_is_valid() {
        let text = "a€𝄞é".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(validate_in_pieces(text, &[i, j]), Ok(()), "cuts {i} {j}");
            }
        }
    }

    #[test]
    fn a_truncated_character_fails_at_finish() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xe2, 0x82]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // Ready for the next sequence.
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn an_invalid_continuation_fails_in_the_piece_that_brings_it() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xe2]), Ok(()));
        assert_eq!(v.feed(&[0x28]), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn pieces_agree_with_the_whole(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let whole = str::from_utf8(&bytes).map(|_| ()).map_err(|_| InvalidUtf8);
            prop_assert_eq!(validate_in_pieces(&bytes, &cuts), whole);
        }

        #[test]
        fn valid_text_in_pieces_is_valid(text in "\\PC{0,24}", cuts in proptest::collection::vec(0usize..100, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(validate_in_pieces(text.as_bytes(), &cuts), Ok(()));
        }
    }
}
