//! Where a table or key sits in a config file: the line an error names.
//!
//! serde's view of the file has no positions, so the text is parsed a
//! second time (only when a line is asked for) into a document that keeps
//! each key's span: sub-tables, inline tables, arrays of tables and quoted
//! names are then found as TOML means them, not by matching header lines.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

/// A table found in the document (a `[table]`, one `[[array]]` element or
/// an inline `{ ... }`) and the span of its header or braces.
struct Node<'a> {
    table: &'a dyn TableLike,
    span: Option<Range<usize>>,
}

/// The byte offset of `key` (dotted, each part optionally `name[i]` for the
/// i-th element of an array) inside the `nth` table at `path`, or of that
/// table when `key` is empty or absent from it.
pub(super) fn offset(doc: &ImDocument<String>, path: &[&str], nth: usize, key: &str) -> Option<usize> {
    let mut level = vec![Node {
        table: doc.as_table(),
        span: None,
    }];
    for part in path {
        level = level
            .iter()
            .filter_map(|n| n.table.get_key_value(part))
            .flat_map(|(_, item)| tables(item))
            .collect();
    }
    let node = level.into_iter().nth(nth)?;
    let mut at = node.span.as_ref().map(|s| s.start);
    let mut table = Some(node.table);
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, item)) = table.and_then(|t| t.get_key_value(name)) else {
            break;
        };
        at = k.span().map(|s| s.start).or(at);
        let item = match (index, item) {
            (Some(i), Item::Value(Value::Array(a))) => match a.get(i) {
                Some(v) => {
                    at = v.span().map(|s| s.start).or(at);
                    table = v.as_inline_table().map(|t| t as &dyn TableLike);
                    continue;
                }
                None => break,
            },
            (_, item) => item,
        };
        table = item.as_table_like();
    }
    at
}

/// The tables `item` stands for: itself, or each element of an array of
/// tables (inline or not).
fn tables(item: &Item) -> Vec<Node<'_>> {
    match item {
        Item::ArrayOfTables(a) => a
            .iter()
            .map(|t| Node {
                table: t,
                span: t.span(),
            })
            .collect(),
        Item::Value(Value::Array(a)) => a
            .iter()
            .filter_map(|v| {
                v.as_inline_table().map(|t| Node {
                    table: t,
                    span: v.span(),
                })
            })
            .collect(),
        item => item
            .as_table_like()
            .map(|t| Node {
                table: t,
                span: item.span(),
            })
            .into_iter()
            .collect(),
    }
}

/// The parts of a table name as the checks write it: `server.location`,
/// but `pool.NAME` and `upstream.NAME` keep a dotted NAME whole.
pub(super) fn path(table: &str) -> Vec<&str> {
    for head in ["pool.", "upstream."] {
        if let Some(name) = table.strip_prefix(head) {
            return vec![&head[..head.len() - 1], name];
        }
    }
    table.split('.').filter(|p| !p.is_empty()).collect()
}
