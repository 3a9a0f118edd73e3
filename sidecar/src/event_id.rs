//! Finds an event's id in its JSON body without building the document: a
//! [`serde_json`] visitor walks down the `source.idPointer` path and skips everything else
//! with [`IgnoredAny`], which still checks the whole body is JSON but allocates nothing for
//! it. It answers what `serde_json::Value::pointer` would (the last of duplicate keys wins;
//! a string id as is, a number as serde_json prints it).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The id at `pointer` (RFC 6901, `""` for the whole document) when it is a string or a
/// number; `Ok(None)` when there is none; `Err` when the body is not JSON.
pub fn find(body: &[u8], pointer: &str) -> Result<Option<String>, serde_json::Error> {
    let tokens: Vec<String> = if pointer.is_empty() {
        vec![]
    } else {
        pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = Path(&tokens).deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// The rest of the path to walk down.
struct Path<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for Path<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Path<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| serde_json::Number::from_f64(v).map(|n| n.to_string())).flatten())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((head, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(head))? {
            if matches {
                found = map.next_value_seed(Path(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = self.0.split_first().and_then(|(head, rest)| Some((index(head)?, rest)));
        let mut found = None;
        let mut i = 0usize;
        loop {
            match wanted {
                Some((at, rest)) if at == i => match seq.next_element_seed(Path(rest))? {
                    Some(v) => found = v,
                    None => break,
                },
                _ => {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                }
            }
            i += 1;
        }
        Ok(found)
    }
}

/// An array index as RFC 6901 writes it (no sign, no leading zero).
fn index(token: &str) -> Option<usize> {
    if token.is_empty() || token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Whether a map key equals one path token, without keeping the key.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers as building the document and asking `Value::pointer`.
    #[test]
    fn answers_what_value_pointer_answers() {
        let docs = [
            r#"{"id":"a-1","channel":{"messageId":"m/1","to":{"id":7}},"list":[{"id":"x"},{"id":2.5}]}"#,
            r#"{"id":"first","id":"last"}"#,
            r#"{"i\u0064":"escaped key","a/b":"slash","m~n":"tilde"}"#,
            r#"{"id":null,"n":-42,"big":18446744073709551615,"f":1e3,"t":true}"#,
            r#"[{"id":"in an array"},"b"]"#,
            r#""just a string""#,
            r#"12"#,
            r#"{"deep":{"er":{"id":"é 漢字 \"quoted\""}}}"#,
        ];
        let pointers = [
            "",
            "/id",
            "/channel/messageId",
            "/channel/to/id",
            "/list/0/id",
            "/list/1/id",
            "/list/01/id",
            "/list/9/id",
            "/i\u{64}",
            "/a~1b",
            "/m~0n",
            "/n",
            "/big",
            "/f",
            "/t",
            "/0/id",
            "/1",
            "/deep/er/id",
            "/missing",
            "/id/x",
        ];
        let mut compared = 0;
        for doc in docs {
            let value: serde_json::Value = serde_json::from_str(doc).unwrap();
            for p in pointers {
                let want = match value.pointer(p) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                assert_eq!(find(doc.as_bytes(), p).unwrap(), want, "{p} in {doc}");
                compared += 1;
            }
        }
        assert_eq!(compared, docs.len() * pointers.len());
    }

    #[test]
    fn what_is_not_json_is_an_error() {
        for bad in [&b"{\"id\":\"a\""[..], b"{\"id\":\"a\"} trailing", b"", b"\xff", b"{\"id\":tru}"] {
            assert!(find(bad, "/id").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
