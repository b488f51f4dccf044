//! JavaScript object literals, as nodemailer configuration files write them,
//! read into JSON values.
//!
//! What is read:
//! - `{ key: value, ... }` or a bare `key: value, ...` list (a block copied
//!   out of a larger file), optionally after `module.exports =` and before
//!   a `;`;
//! - keys: identifiers, or strings in single or double quotes;
//! - values: objects, arrays, strings (`'...'`, `"..."`, with `\n`, `\t`,
//!   `\\`, `\'`, `\"`, `\uXXXX` escapes), template literals whose only
//!   interpolations are `${process.env.NAME}`, numbers, `true`, `false`,
//!   `null`, `undefined` (read as null), `process.env.NAME` or
//!   `process.env['NAME']`, optionally followed by `|| <literal>`;
//! - `//` and `/* */` comments and trailing commas anywhere.
//!
//! `process.env.NAME` as a whole value becomes the string `env:NAME`, so
//! the caller decides when to read the environment (a secret is read only
//! when it is needed, and never printed). Inside a template literal the
//! variable is read at once through the caller's `env` function.
//!
//! Bounds: input of at most [`MAX_INPUT`] bytes, nesting at most
//! [`MAX_DEPTH`] levels. Every error names its line and column.

use std::fmt;

use serde_json::{Map, Number, Value};

/// The largest input read: 1 MiB.
pub const MAX_INPUT: usize = 1 << 20;
/// The deepest nesting of objects and arrays.
pub const MAX_DEPTH: usize = 64;

/// Why a text is not a readable object literal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for JsError {}

/// Reads `text`. `env` answers `process.env.NAME` inside template literals
/// (`None`: not set, an error).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, JsError> {
    if text.len() > MAX_INPUT {
        return Err(JsError {
            line: 1,
            column: 1,
            message: format!("longer than {MAX_INPUT} bytes"),
        });
    }
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        env,
        depth: 0,
    };
    p.skip();
    p.keyword_prefix();
    p.skip();
    let value = if p.peek() == Some('{') {
        p.value()?
    } else {
        // A bare `key: value, ...` list.
        Value::Object(p.members(None)?)
    };
    p.skip();
    while p.peek() == Some(';') {
        p.pos += 1;
        p.skip();
    }
    if p.peek().is_some() {
        return Err(p.error("unexpected text after the object"));
    }
    Ok(value)
}

struct Parser<'e> {
    chars: Vec<char>,
    pos: usize,
    env: &'e dyn Fn(&str) -> Option<String>,
    depth: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, message: impl Into<String>) -> JsError {
        let before = &self.chars[..self.pos.min(self.chars.len())];
        let line = before.iter().filter(|c| **c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
        JsError {
            line,
            column,
            message: message.into(),
        }
    }

    /// Skips white space and comments.
    fn skip(&mut self) {
        loop {
            match (self.peek(), self.chars.get(self.pos + 1).copied()) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                (Some('/'), Some('*')) => {
                    self.pos += 2;
                    while self.pos < self.chars.len()
                        && !(self.chars[self.pos] == '*'
                            && self.chars.get(self.pos + 1) == Some(&'/'))
                    {
                        self.pos += 1;
                    }
                    self.pos = (self.pos + 2).min(self.chars.len());
                }
                _ => return,
            }
        }
    }

    /// Skips `module.exports =` (or `exports =`) when the text starts so.
    fn keyword_prefix(&mut self) {
        let save = self.pos;
        let word = self.ident();
        let word = match word.as_deref() {
            Some("module") if self.peek() == Some('.') => {
                self.pos += 1;
                self.ident()
            }
            _ => word,
        };
        self.skip();
        if word.as_deref() == Some("exports") && self.peek() == Some('=') {
            self.pos += 1;
        } else {
            self.pos = save;
        }
    }

    fn ident(&mut self) -> Option<String> {
        if !self.peek().is_some_and(is_ident_start) {
            return None;
        }
        let start = self.pos;
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        Some(self.chars[start..self.pos].iter().collect())
    }

    fn expect(&mut self, c: char) -> Result<(), JsError> {
        self.skip();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected '{c}'")))
        }
    }

    /// Members up to `close` (or the end of the text for a bare list).
    fn members(&mut self, close: Option<char>) -> Result<Map<String, Value>, JsError> {
        let mut map = Map::new();
        loop {
            self.skip();
            match self.peek() {
                None if close.is_none() => return Ok(map),
                Some(';') if close.is_none() => return Ok(map),
                c if c == close && c.is_some() => {
                    self.pos += 1;
                    return Ok(map);
                }
                None => return Err(self.error("unterminated object")),
                _ => {}
            }
            let key = match self.peek() {
                Some(q @ ('\'' | '"')) => {
                    self.pos += 1;
                    self.string(q)?
                }
                _ => self
                    .ident()
                    .ok_or_else(|| self.error("expected a key (a name or a quoted string)"))?,
            };
            self.expect(':')?;
            let value = self.value()?;
            if map.insert(key.clone(), value).is_some() {
                return Err(self.error(format!("key {key:?} appears twice")));
            }
            self.skip();
            match self.peek() {
                Some(',') => self.pos += 1,
                c if c == close && c.is_some() => {}
                None | Some(';') if close.is_none() => {}
                _ => return Err(self.error("expected ',' between members")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, JsError> {
        self.skip();
        let value = self.primary()?;
        self.skip();
        // `process.env.X || 'default'`: the default when X is unset.
        if self.peek() == Some('|') && self.chars.get(self.pos + 1) == Some(&'|') {
            self.pos += 2;
            let fallback = self.value()?;
            return Ok(match value {
                Value::String(s) if s.starts_with("env:") => {
                    let mut m = Map::new();
                    m.insert("env".into(), Value::String(s["env:".len()..].to_owned()));
                    m.insert("default".into(), fallback);
                    Value::Object([("$or".to_owned(), Value::Object(m))].into_iter().collect())
                }
                other => other,
            });
        }
        Ok(value)
    }

    fn primary(&mut self) -> Result<Value, JsError> {
        match self.peek() {
            Some('{') => {
                self.nest()?;
                self.pos += 1;
                let m = self.members(Some('}'))?;
                self.depth -= 1;
                Ok(Value::Object(m))
            }
            Some('[') => {
                self.nest()?;
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip();
                    if self.peek() == Some(']') {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value()?);
                    self.skip();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {}
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
                self.depth -= 1;
                Ok(Value::Array(items))
            }
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                Ok(Value::String(self.string(q)?))
            }
            Some('`') => {
                self.pos += 1;
                Ok(Value::String(self.template()?))
            }
            Some(c) if c == '-' || c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if is_ident_start(c) => {
                let word = self.ident().unwrap_or_default();
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" | "undefined" => Ok(Value::Null),
                    "process" => Ok(Value::String(format!("env:{}", self.env_ref()?))),
                    other => Err(self.error(format!(
                        "{other:?} is not a value postern can read (a string, number, object, or process.env.NAME)"
                    ))),
                }
            }
            Some(c) => Err(self.error(format!("unexpected {c:?}"))),
            None => Err(self.error("expected a value")),
        }
    }

    fn nest(&mut self) -> Result<(), JsError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// After `process`: `.env.NAME` or `.env['NAME']`; returns NAME.
    fn env_ref(&mut self) -> Result<String, JsError> {
        let bad = |p: &Self| p.error("expected process.env.NAME");
        if self.peek() != Some('.') {
            return Err(bad(self));
        }
        self.pos += 1;
        if self.ident().as_deref() != Some("env") {
            return Err(bad(self));
        }
        match self.peek() {
            Some('.') => {
                self.pos += 1;
                self.ident().ok_or_else(|| bad(self))
            }
            Some('[') => {
                self.pos += 1;
                self.skip();
                let q = self
                    .peek()
                    .filter(|c| *c == '\'' || *c == '"')
                    .ok_or_else(|| bad(self))?;
                self.pos += 1;
                let name = self.string(q)?;
                self.expect(']')?;
                Ok(name)
            }
            _ => Err(bad(self)),
        }
    }

    /// A quoted string after its opening quote `q`.
    fn string(&mut self, q: char) -> Result<String, JsError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err(self.error("unterminated string")),
                Some(c) if c == q => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
    }

    fn escape(&mut self) -> Result<char, JsError> {
        let c = self
            .peek()
            .ok_or_else(|| self.error("unterminated escape"))?;
        self.pos += 1;
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            'u' => {
                let hex: String = self.chars.iter().skip(self.pos).take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| self.error("bad \\u escape"))?;
                self.pos += 4;
                char::from_u32(code).unwrap_or('\u{fffd}')
            }
            other => other,
        })
    }

    /// A template literal after its backquote.
    fn template(&mut self) -> Result<String, JsError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated template literal")),
                Some('`') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some('$') if self.chars.get(self.pos + 1) == Some(&'{') => {
                    self.pos += 2;
                    self.skip();
                    if self.ident().as_deref() != Some("process") {
                        return Err(self.error("only ${process.env.NAME} can be interpolated"));
                    }
                    let name = self.env_ref()?;
                    self.expect('}')?;
                    let value = (self.env)(&name).ok_or_else(|| {
                        self.error(format!("environment variable {name} is not set"))
                    })?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| self.error(format!("{text:?} is not a number")))
    }
}

/// Resolves a value read by [`parse`] for a field that is not a secret:
/// `env:NAME` becomes the variable's value, `{"$or": {env, default}}` the
/// variable or the default. `None` when the variable is unset and there is
/// no default.
pub fn resolve(value: &Value, env: &dyn Fn(&str) -> Option<String>) -> Option<Value> {
    match value {
        Value::String(s) => match s.strip_prefix("env:") {
            Some(name) => env(name).map(Value::String),
            None => Some(value.clone()),
        },
        Value::Object(m) if m.len() == 1 && m.contains_key("$or") => {
            let or = &m["$or"];
            let name = or["env"].as_str()?;
            env(name)
                .map(Value::String)
                .or_else(|| Some(or["default"].clone()))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "TENANT").then(|| "contoso".to_owned())
    }

    #[test]
    fn the_guides_block() {
        let text = r#"mail: {
smtp: {
type: 'oauth2',
host: 'smtp.office365.com',
port: 587,
auth: {
user: process.env.TAS_SMTP_AUTH_USER,
},
oauth2: {
host:`https://login.microsoftonline.com/${process.env.TENANT}/oauth2/v2.0/token`,
grantType: 'client_credentials',
clientSecret: process.env.TAS_SMTP_OAUTH_CLIENT_SECRET,
clientId: process.env.TAS_SMTP_OAUTH_CLIENT_ID,scope: 'https://outlook.office365.com/.default',
},
},
},"#;
        let v = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
        let smtp = &v["mail"]["smtp"];
        assert_eq!(smtp["type"], "oauth2");
        assert_eq!(smtp["port"], 587);
        assert_eq!(smtp["auth"]["user"], "env:TAS_SMTP_AUTH_USER");
        assert_eq!(
            smtp["oauth2"]["host"],
            "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
        );
        assert_eq!(smtp["oauth2"]["clientId"], "env:TAS_SMTP_OAUTH_CLIENT_ID");
    }

    #[test]
    fn module_exports_comments_quotes_and_defaults() {
        let text = "// config\nmodule.exports = {\n  /* the server */ 'host': \"smtp.example.com\",\n  port: process.env.PORT || 465, secure: true, list: [1, 2.5, -3,], name: 'it\\'s',\n};\n";
        let v = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["host"], "smtp.example.com");
        assert_eq!(v["list"], json!([1, 2.5, -3]));
        assert_eq!(v["name"], "it's");
        assert_eq!(resolve(&v["port"], &env), Some(json!(465)));
        assert_eq!(
            resolve(&v["port"], &|_| Some("2465".into())),
            Some(json!("2465"))
        );
        assert_eq!(resolve(&json!("env:NOPE"), &env), None);
    }

    #[test]
    fn json_is_read_as_json() {
        let text = r#"{"host": "h", "n": [true, null, {"a": "\u00e9"}]}"#;
        let v = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, serde_json::from_str::<Value>(text).unwrap_or_default());
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("{\n  host: require('x'),\n}", &env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 16));
        assert!(e.message.contains("require"), "{e}");
        let e = parse("{ a: `x${process.env.UNSET}` }", &env).unwrap_err();
        assert!(e.message.contains("UNSET is not set"), "{e}");
        assert!(parse("{ a: 1, a: 2 }", &env).is_err(), "duplicate key");
        assert!(parse(&"[".repeat(100), &env).is_err());
        assert!(parse("{ a: 'x\n' }", &env).is_err());
    }
}
