//! A small XML reader for S3 responses: elements, text and the predefined and numeric entities.
//!
//! S3 answers with small, flat documents (`ListBucketResult`, `Error`, ...). Attributes are
//! skipped, namespace prefixes dropped, comments, processing instructions and a DOCTYPE ignored
//! (its entity declarations are never expanded), CDATA taken as text. Text is kept exactly as
//! written, apart from entity references: object keys may begin or end with spaces.

use std::fmt::Write as _;

/// An element with its child elements and its own text (the concatenation of its text nodes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// How deep elements may nest. S3 responses nest four levels; the limit keeps a hostile body
/// from building a tree so deep that dropping it (recursively) overflows the stack.
pub const MAX_DEPTH: usize = 64;

/// Parses a document and returns its root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut rest = doc.strip_prefix('\u{feff}').unwrap_or(doc);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = skip_past(after, "?>")?;
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = skip_past(after, "-->")?;
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").ok_or("unterminated CDATA section")?;
            match stack.last_mut() {
                Some(top) => top.text.push_str(&after[..end]),
                None => return Err("CDATA outside the root element".into()),
            }
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<!") {
            rest = skip_declaration(after)?;
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("unterminated end tag")?;
            let name = local_name(after[..end].trim_end());
            let el = stack.pop().ok_or_else(|| format!("unexpected end tag </{name}>"))?;
            if el.name != name {
                return Err(format!("end tag </{name}> does not close <{}>", el.name));
            }
            attach(&mut stack, &mut root, el);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after)?;
            let inner = &after[..end];
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let name_len = inner.find(|c: char| c.is_whitespace()).unwrap_or(inner.len());
            let name = &inner[..name_len];
            if name.is_empty() {
                return Err("a tag without a name".into());
            }
            if root.is_some() && stack.is_empty() {
                return Err(format!("a second root element <{name}>"));
            }
            let el = Element { name: local_name(name).to_string(), ..Element::default() };
            if !empty && stack.len() >= MAX_DEPTH {
                return Err(format!("elements nested deeper than {MAX_DEPTH} levels"));
            }
            if empty {
                attach(&mut stack, &mut root, el);
            } else {
                stack.push(el);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let raw = &rest[..end];
            match stack.last_mut() {
                Some(top) => unescape_into(raw, &mut top.text)?,
                None if raw.trim().is_empty() => {}
                None => return Err("text outside the root element".into()),
            }
            rest = &rest[end..];
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("element <{}> is not closed", open.name));
    }
    root.ok_or_else(|| "no root element".to_string())
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn skip_past<'a>(s: &'a str, end: &str) -> Result<&'a str, String> {
    let i = s.find(end).ok_or_else(|| format!("missing {end:?}"))?;
    Ok(&s[i + end.len()..])
}

/// Skips `<!DOCTYPE ...>`, including an internal subset in brackets.
fn skip_declaration(s: &str) -> Result<&str, String> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '>') if depth == 0 => return Ok(&s[i + 1..]),
            _ => {}
        }
    }
    Err("unterminated declaration".into())
}

/// The index of the `>` closing a start tag, skipping quoted attribute values.
fn tag_end(s: &str) -> Result<usize, String> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Ok(i),
            (None, '<') => return Err("'<' inside a tag".into()),
            _ => {}
        }
    }
    Err("unterminated start tag".into())
}

/// Appends `raw` to `out`, replacing entity and character references.
fn unescape_into(raw: &str, out: &mut String) -> Result<(), String> {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi =
            after.find(';').filter(|&i| i <= 10).ok_or_else(|| format!("bad entity reference near {after:.12?}"))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    return Err(format!("unknown entity &{entity};"));
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("bad character reference &{entity};"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// Escapes text for an XML element's content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_documents_are_refused_before_they_exhaust_the_stack() {
        // 200000 nested elements parsed, but dropping the tree recursed once per level.
        let n = 200_000;
        let doc = format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        let err = parse(&doc).unwrap_err();
        assert!(err.contains("nested deeper than 64"), "{err}");
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert_eq!(parse(&ok).unwrap().name, "a");
    }

    #[test]
    fn parses_nested_elements_and_text() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Contents><Key>a</Key><Size>1</Size></Contents>
  <Contents><Key>b</Key><Size>22</Size></Contents>
  <Empty/>
  <s3:Prefixed attr='x>y'>p</s3:Prefixed>
</ListBucketResult>
"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "ListBucketResult");
        assert_eq!(root.child_text("Name"), Some("bucket"));
        let keys: Vec<_> = root.children("Contents").map(|c| c.child_text("Key").unwrap()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(root.children("Contents").nth(1).unwrap().child_text("Size"), Some("22"));
        assert_eq!(root.child_text("Empty"), Some(""));
        assert_eq!(root.child_text("Prefixed"), Some("p"));
        assert_eq!(root.child("Missing"), None);
    }

    #[test]
    fn unescapes_entities_and_keeps_spaces() {
        let root = parse("<K>  a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#252;&#x20AC;&#X41; </K>").unwrap();
        assert_eq!(root.text, "  a & b <c> \"d\" 'e' ü€A ");
        let root = parse("<K><![CDATA[x &amp; <y>]]>z</K>").unwrap();
        assert_eq!(root.text, "x &amp; <y>z");
        let root = parse("<K>grüße/日本 x</K>").unwrap();
        assert_eq!(root.text, "grüße/日本 x");
    }

    #[test]
    fn doctype_entities_are_not_expanded() {
        let doc = "<!DOCTYPE r [<!ENTITY e \"boom\">]><r>&e;</r>";
        assert!(parse(doc).unwrap_err().contains("unknown entity"));
        assert_eq!(parse("<!DOCTYPE r [<!ENTITY e \"]>\">]><r>x</r>").unwrap().text, "x");
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [
            "",
            "just text",
            "<a>",
            "<a></b>",
            "</a>",
            "<a>&bogus;</a>",
            "<a>&#xD800;</a>",
            "<a>& b</a>",
            "<a></a><b></b>",
            "<a",
            "<a><![CDATA[x</a>",
            "<>x</>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn escape_round_trips() {
        let s = "a&b<c>\"d\"'e' ü \u{1}";
        assert_eq!(escape(s), "a&amp;b&lt;c&gt;&quot;d&quot;&apos;e&apos; ü &#x1;");
        assert_eq!(parse(&format!("<x>{}</x>", escape(s))).unwrap().text, s);
    }
}
