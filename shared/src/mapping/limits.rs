//! Size limits checked before anything is sent.
//!
//! Pipefy does not document how long a text value or how long a list may be (docs/pipefy-api.md, Unverified), so
//! these are conservative values kept in this one place and listed in docs/mapping.md: a value
//! beyond them fails here as `TOO_LARGE`, naming the field, instead of as an opaque Pipefy
//! error half-way through a batch.

/// `short_text`, `email`, `phone`, `cpf`, `cnpj` fields, counted in characters (not bytes).
pub const SHORT_TEXT_MAX_CHARS: usize = 255;

/// `long_text` fields, in characters.
pub const LONG_TEXT_MAX_CHARS: usize = 65_535;

/// The card/record `title` attribute, in characters.
pub const TITLE_MAX_CHARS: usize = 255;

/// Items of one list value: checklist options, labels, assignees, connected cards/records,
/// parent cards, attachments.
pub const MAX_LIST_ITEMS: usize = 500;

/// Longest source value quoted in an error message; longer values are cut with `…` so a
/// report stays readable.
pub const MESSAGE_VALUE_MAX_CHARS: usize = 80;
