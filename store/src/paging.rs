//! Pages of a list: a page's rows and the cursor after them.

/// A page of a list, newest first, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to read on; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The first `limit` rows, and a cursor when there were more.
pub(super) fn page<T>(mut rows: Vec<T>, limit: u64, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    Page { items: rows, next_cursor }
}

/// `%` and `_` in a search are literal characters, not wildcards.
pub(super) fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
