//! A YAML document as a tree that remembers where every node starts.
//!
//! `check` must report every problem in a rules file at once, each with its `line:col`. A serde
//! deserializer stops at the first error, so the rules are read in two steps: `saphyr-parser`
//! (the maintained successor of yaml-rust) turns the text into events with spans, this module
//! folds them into a [`Node`] tree that keeps duplicate keys and positions, and
//! [`super::load()`] walks that tree, collecting every error it finds.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A 1-based line and column in the rules file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar as written, with whether it was quoted (a quoted `"12"` is never a number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in document order; duplicates are kept so that they can be reported.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// True for `~`, `null`, an empty value, or an absent document.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A syntax error from the YAML parser.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// The most nodes a document's aliases may expand to. A rules file has a few hundred nodes; nested aliases (`b: [*a, *a, *a, ...]`, `c: [*b, *b, ...]`) grow exponentially, and
/// 600 bytes of them would otherwise take gigabytes.
pub const MAX_NODES: usize = 100_000;

/// How many nodes `node` holds, itself included.
fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(items) => items.iter().map(|(k, v)| size(k) + size(v)).sum(),
    }
}

/// Parses the first document of `text`. An empty document gives a null node at 1:1.
/// A tab the parser refused: the scanner may report it at the end of the line before, so the
/// position is that of the first tab in a line's indentation from there on, and the message
/// says what to do.
fn tab_error(text: &str, reported: Pos, info: &str) -> SyntaxError {
    let found = text
        .lines()
        .enumerate()
        .skip(reported.line.saturating_sub(1))
        .find_map(|(i, line)| {
            let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
            line[..indent].find('\t').map(|col| Pos {
                line: i + 1,
                col: line[..col].chars().count() + 1,
            })
        });
    SyntaxError {
        pos: found.unwrap_or(reported),
        message: format!("a tab in the indentation ({info}): indent with spaces, YAML does not allow tabs there"),
    }
}

pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut tree = Tree::default();
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(syntax_error(text, &e)),
        };
        if matches!(event, Event::StreamEnd | Event::DocumentEnd) && tree.root.is_some() {
            break;
        }
        if let Some((node, anchor)) = tree.event(event, Pos::from_span(&span))? {
            tree.place(node, anchor);
        }
    }
    Ok(tree.root.unwrap_or(Node {
        value: Value::Scalar {
            text: String::new(),
            quoted: false,
        },
        pos: Pos { line: 1, col: 1 },
    }))
}

/// The parser's error, with its position (a tab gets its own explanation).
fn syntax_error(text: &str, e: &saphyr_parser::ScanError) -> SyntaxError {
    let m = e.marker();
    let pos = Pos {
        line: m.line(),
        col: m.col() + 1,
    };
    if e.info().contains("tab") {
        return tab_error(text, pos, e.info());
    }
    SyntaxError {
        pos,
        message: e.info().to_string(),
    }
}

/// The tree as the parser's events build it.
#[derive(Default)]
struct Tree {
    /// The collections open, innermost last.
    stack: Vec<Frame>,
    /// Each anchored node with its size.
    anchors: HashMap<usize, (Node, usize)>,
    /// How many nodes the aliases so far expanded to.
    nodes: usize,
    root: Option<Node>,
}

impl Tree {
    /// One event at `pos`: the node it finished (with its anchor, 0 for none), if any.
    fn event(&mut self, event: Event, pos: Pos) -> Result<Option<(Node, usize)>, SyntaxError> {
        let unbalanced = |what: &str| SyntaxError {
            pos,
            message: format!("unbalanced {what}"),
        };
        Ok(match event {
            Event::Scalar(text, style, anchor, _tag) => Some((
                Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        quoted: !matches!(style, ScalarStyle::Plain),
                    },
                    pos,
                },
                anchor,
            )),
            Event::Alias(id) => Some((self.alias(id, pos)?, 0)),
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(p, anchor, items)) => Some((
                    Node {
                        value: Value::Seq(items),
                        pos: p,
                    },
                    anchor,
                )),
                _ => return Err(unbalanced("sequence")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(p, anchor, items, _)) => Some((
                    Node {
                        value: Value::Map(items),
                        pos: p,
                    },
                    anchor,
                )),
                _ => return Err(unbalanced("mapping")),
            },
            _ => None,
        })
    }

    /// A copy of the node anchored as `id`, at `pos`; refused past [`MAX_NODES`] in all.
    fn alias(&mut self, id: usize, pos: Pos) -> Result<Node, SyntaxError> {
        let (node, n) = self.anchors.get(&id).ok_or_else(|| SyntaxError {
            pos,
            message: "alias to an unknown anchor".into(),
        })?;
        self.nodes = self.nodes.saturating_add(*n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "aliases expand past {MAX_NODES} nodes (an alias bomb?): write the values out, or use fewer nested aliases"
                ),
            });
        }
        Ok(Node { pos, ..node.clone() })
    }

    /// A finished node goes into the collection open around it (or is the root).
    fn place(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let n = size(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, items, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => items.push((k, node)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_duplicates_kept() {
        let doc = parse("a: 1\nb:\n  - x\n  - \"y\"\na: 2\n").unwrap();
        let Value::Map(items) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(items[2].0.as_scalar(), Some("a"));
        assert_eq!(items[2].0.pos, Pos { line: 5, col: 1 });
        let Value::Seq(seq) = &items[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(seq[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(
            seq[1].value,
            Value::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn flow_sequences_and_aliases() {
        let doc = parse("x: &a [p, q]\ny: *a\n").unwrap();
        let Value::Map(items) = &doc.value else { panic!() };
        assert_eq!(items[1].1.pos, Pos { line: 2, col: 4 });
        let Value::Seq(seq) = &items[1].1.value else { panic!() };
        assert_eq!(seq.len(), 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn an_alias_bomb_is_an_error_at_the_alias_that_crosses_the_bound() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            doc.push_str(&format!(
                "{cur}: &{cur} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let started = std::time::Instant::now();
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{err:?}");
        assert!(err.pos.line > 1 && err.pos.line <= 12, "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A few aliases are fine.
        assert!(parse("a: &a {k: v}\nb: *a\nc: *a\n").is_ok());
    }

    #[test]
    fn empty_document_is_null() {
        assert!(parse("").unwrap().is_null());
        assert!(parse("# only a comment\n").unwrap().is_null());
    }
}
