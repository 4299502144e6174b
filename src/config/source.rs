//! Source positions for agent files: a map from key path (`actions[1].context.timeout`)
//! to the 1-based line and column where that key (or sequence item) starts.
//!
//! serde_yaml drops positions once a document parses, so the text is walked a second time
//! with yaml-rust2's event parser, which reports a marker for every node.

use std::collections::{HashMap, HashSet};
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based source position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of the keys of one agent file, and which value scalars were quoted.
#[derive(Default)]
pub(crate) struct SourceMap {
    keys: HashMap<String, Pos>,
    /// Value paths whose scalar was quoted or a block scalar: an env reference there stays
    /// a string instead of being re-typed, as it would if the text were written in place.
    quoted: HashSet<String>,
    /// Repeated keys (second and later occurrences), in source order.
    duplicates: Vec<(String, Pos)>,
}

impl fmt::Debug for SourceMap {
    // The full map is noise in `ActionDecl`'s Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceMap({} keys)", self.keys.len())
    }
}

impl SourceMap {
    /// Walks `text`; on a syntax error, keeps what was seen before it (best effort, since
    /// the caller reports syntax errors from serde_yaml and only wants a nearby key).
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        // Errors are deliberately ignored: see above.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        builder.map
    }

    /// Position of exactly this path.
    pub fn get(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    /// Position of `path`, or of its nearest ancestor that exists in the source.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut current = path;
        loop {
            if let Some(pos) = self.get(current) {
                return Some(pos);
            }
            current = parent(current)?;
        }
    }

    /// Whether the value at `path` was written as a quoted or block scalar.
    pub fn is_quoted(&self, path: &str) -> bool {
        self.quoted.contains(path)
    }

    /// The first repeated key and where it is repeated.
    pub fn first_duplicate(&self) -> Option<(&str, Pos)> {
        self.duplicates
            .first()
            .map(|(path, pos)| (path.as_str(), *pos))
    }

    /// The key that starts last at or before `pos` (to name a key for syntax errors).
    pub fn last_key_before(&self, pos: Pos) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(path, p)| **p <= pos && !path.is_empty())
            .max_by_key(|(path, p)| (**p, path.len()))
            .map(|(path, _)| path.as_str())
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// The parent of a key path (`a.b[2]` -> `a.b` -> `a` -> ``); `None` for the root.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    Some(cut.map_or("", |i| &path[..i]))
}

/// An open collection while walking events. `path` is `None` inside complex (non-scalar)
/// mapping keys, which have no key path.
enum Frame {
    Map {
        path: Option<String>,
        /// Path whose position came from this mapping's start marker (root and sequence
        /// items); see [`Builder::adjust_start`].
        own: Option<String>,
        /// Path of the key whose value comes next (`None` after a non-scalar key).
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        path: Option<String>,
        own: Option<String>,
        next: usize,
    },
}

/// What role the node starting now plays in its parent.
enum Slot {
    /// A mapping key; carries the mapping's path.
    Key(Option<String>),
    /// A mapping value, sequence item or the root; carries its own path.
    Value(Option<String>),
}

#[derive(Default)]
struct Builder {
    map: SourceMap,
    stack: Vec<Frame>,
}

impl Builder {
    fn record(&mut self, path: &str, pos: Pos) {
        // First occurrence wins; later ones are kept to position serde_yaml's
        // duplicate-key error, which only carries the mapping's position.
        if self.map.keys.contains_key(path) {
            self.map.duplicates.push((path.to_owned(), pos));
        } else {
            self.map.keys.insert(path.to_owned(), pos);
        }
    }

    /// yaml-rust2 marks a block collection's start at its first `:` or later, not at its
    /// first key; the first child's position is where the collection visibly starts.
    fn adjust_start(&mut self, child: Pos) {
        let own = match self.stack.last_mut() {
            Some(Frame::Map { own, .. } | Frame::Seq { own, .. }) => own.take(),
            None => None,
        };
        if let Some(own) = own
            && let Some(pos) = self.map.keys.get_mut(&own)
        {
            *pos = (*pos).min(child);
        }
    }

    fn slot(&mut self, pos: Pos) -> Slot {
        match self.stack.last_mut() {
            None => {
                self.record("", pos);
                Slot::Value(Some(String::new()))
            }
            Some(Frame::Map {
                path,
                key,
                expecting_key,
                ..
            }) => {
                if *expecting_key {
                    Slot::Key(path.clone())
                } else {
                    Slot::Value(key.clone())
                }
            }
            Some(Frame::Seq { path, next, .. }) => {
                let item = path.as_deref().map(|p| join_index(p, *next));
                *next += 1;
                if let Some(item) = &item {
                    self.adjust_start(pos);
                    self.record(item, pos);
                }
                Slot::Value(item)
            }
        }
    }

    /// A node (scalar, alias or whole collection) is complete: advance the parent mapping
    /// between key and value.
    fn finish_node(&mut self) {
        if let Some(Frame::Map {
            key, expecting_key, ..
        }) = self.stack.last_mut()
        {
            if *expecting_key {
                *expecting_key = false;
            } else {
                *expecting_key = true;
                *key = None;
            }
        }
    }

    fn set_current_key(&mut self, new_key: Option<String>) {
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = new_key;
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        // yaml-rust2 lines are 1-based and columns 0-based.
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::Scalar(value, style, ..) => {
                match self.slot(pos) {
                    Slot::Key(map_path) => {
                        let key = map_path.map(|p| join_key(&p, &value));
                        if let Some(key) = &key {
                            self.adjust_start(pos);
                            self.record(key, pos);
                        }
                        self.set_current_key(key);
                    }
                    Slot::Value(Some(path)) if style != TScalarStyle::Plain => {
                        self.map.quoted.insert(path);
                    }
                    Slot::Value(_) => {}
                }
                self.finish_node();
            }
            Event::Alias(_) => {
                self.slot(pos);
                self.finish_node();
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let in_seq = matches!(self.stack.last(), None | Some(Frame::Seq { .. }));
                let path = match self.slot(pos) {
                    Slot::Key(_) => {
                        self.set_current_key(None);
                        None
                    }
                    Slot::Value(path) => path,
                };
                // Only the root and sequence items had their position recorded from the
                // start marker; mapping values are positioned by their key.
                let own = if in_seq { path.clone() } else { None };
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            path,
                            own,
                            key: None,
                            expecting_key: true,
                        }
                    } else {
                        Frame::Seq { path, own, next: 0 }
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.finish_node();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: usize, column: usize) -> Option<Pos> {
        Some(Pos { line, column })
    }

    const TEXT: &str = "\
agent: acme/notifier
context: { alias: Notifier, enabled: true }
actions:
  - action: sentdm_broadcast
    name: sentdm
    context:
      timeout: \"30\"
      list: [a, {deep: 1}]
  - {action: other, context: {x: 'y'}}
";

    #[test]
    fn records_key_and_item_positions() {
        let map = SourceMap::build(TEXT);
        assert_eq!(map.get(""), pos(1, 1));
        assert_eq!(map.get("agent"), pos(1, 1));
        assert_eq!(map.get("context"), pos(2, 1));
        assert_eq!(map.get("context.alias"), pos(2, 12));
        assert_eq!(map.get("context.enabled"), pos(2, 29));
        assert_eq!(map.get("actions[0]"), pos(4, 5));
        assert_eq!(map.get("actions[0].action"), pos(4, 5));
        assert_eq!(map.get("actions[0].name"), pos(5, 5));
        assert_eq!(map.get("actions[0].context.timeout"), pos(7, 7));
        assert_eq!(map.get("actions[0].context.list[1].deep"), pos(8, 18));
        assert_eq!(map.get("actions[1].context.x"), pos(9, 31));
        assert!(map.is_quoted("actions[0].context.timeout"));
        assert!(map.is_quoted("actions[1].context.x"));
        assert!(!map.is_quoted("actions[0].name"));
    }

    #[test]
    fn locate_falls_back_to_ancestors() {
        let map = SourceMap::build(TEXT);
        assert_eq!(map.locate("actions[0].context.missing"), pos(6, 5));
        assert_eq!(map.locate("actions[0].context.list[7].x"), pos(8, 7));
        assert_eq!(map.locate("actions[5].name"), pos(3, 1));
        assert_eq!(map.locate("nothing"), pos(1, 1));
        assert_eq!(SourceMap::default().locate("x"), None);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent("[0]"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn complex_keys_are_skipped_and_partial_input_is_kept() {
        let map = SourceMap::build("? [a, b]\n: {inner: 1}\nnext: 2\n");
        assert_eq!(map.get("next"), pos(3, 1));
        assert!(map.keys.keys().all(|k| !k.contains("inner")));

        let map = SourceMap::build("agent: x\nactions:\n  - action: a\n   name: [\n");
        assert_eq!(map.get("actions[0].action"), pos(3, 5));
        assert_eq!(
            map.last_key_before(Pos { line: 4, column: 1 }),
            Some("actions[0].action")
        );
    }
}
