//! request-transformer's templates: text with `$(expression)` parts, as Kong's Penlight
//! templates, over a small expression language instead of Lua: the request's `headers`,
//! `query_params`, `uri_captures` and what plugins shared (`shared`, [`SharedValues`]) (`headers['x-a']`, `headers.x_a`, `uri_captures[1]`,
//! `uri_captures.name`), text and number literals, `or`, `..`, `+ - * /` and parentheses. Values
//! follow Lua's rules: `nil` and `false` are false, numeric text takes part in arithmetic,
//! `nil` renders as nothing.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    Num(f64),
    /// A root (`headers`) and the keys after it.
    Path(String, Vec<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Concat(Box<Expr>, Box<Expr>),
    Arith(char, Box<Expr>, Box<Expr>),
}

/// A value while rendering.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Nil,
    Str(String),
    Num(f64),
    /// A table (several values of a header or argument).
    List(Vec<String>),
}

impl Val {
    fn truthy(&self) -> bool {
        !matches!(self, Val::Nil)
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn text(&self) -> Result<String, String> {
        match self {
            Val::Nil => Ok(String::new()),
            Val::Str(s) => Ok(s.clone()),
            Val::Num(n) => Ok(lua_number(*n)),
            Val::List(_) => Err("attempt to concatenate a table value".into()),
        }
    }
}

/// How Lua prints a number: integers without a fraction.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// String values a plugin shares with templates for one request: `$(shared.name)` reads
/// them. Kong's templates read `kong.ctx.shared`, which is typed here, so a plugin that
/// wants its values templated inserts this map there:
///
/// ```
/// # use kong_pdk::prelude::*;
/// # async fn access(kong: &mut Kong<'_, Access>) {
/// use kong_plugins::template::SharedValues;
/// let mut values = SharedValues::default();
/// values.0.insert("tenant".into(), "acme".into());
/// kong.ctx().shared().insert(values);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SharedValues(pub BTreeMap<String, String>);

/// What templates read: the request as it came.
pub struct Env<'a> {
    /// Request headers by lower-cased name.
    pub headers: &'a BTreeMap<String, Vec<String>>,
    /// Query arguments (a flag is `None`).
    pub query: &'a BTreeMap<String, Vec<Option<String>>>,
    /// Router captures: unnamed by position (0 the whole match), and named.
    pub captures_unnamed: &'a [String],
    /// Named captures.
    pub captures_named: &'a std::collections::HashMap<String, String>,
    /// What plugins shared for templates ([`SharedValues`]).
    pub shared: Option<&'a SharedValues>,
}

impl Template {
    /// Parses `text`; the error says what is wrong with an expression.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("$(") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let body = &rest[start + 2..];
            let end = closing(body).ok_or("unclosed $( in template")?;
            let mut p = Parser {
                src: &body[..end],
                pos: 0,
            };
            let expr = p.expr()?;
            p.skip_ws();
            if p.pos != p.src.len() {
                return Err(format!("unexpected '{}'", &p.src[p.pos..]));
            }
            parts.push(Part::Expr(expr));
            rest = &body[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// Renders the template against `env`.
    pub fn render(&self, env: &Env<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&eval(e, env)?.text()?),
            }
        }
        Ok(out)
    }
}

/// Where the `)` closing an expression is, past nested parentheses and quoted text.
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.src[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.src[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.src[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.concat()?;
        loop {
            self.skip_ws();
            let rest = &self.src[self.pos..];
            let keyword = rest.starts_with("or") && !rest[2..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
            if !keyword {
                return Ok(left);
            }
            self.pos += 2;
            let right = self.concat()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
    }

    fn concat(&mut self) -> Result<Expr, String> {
        let left = self.sum()?;
        if self.eat("..") {
            // Right-associative, as Lua's.
            let right = self.concat()?;
            return Ok(Expr::Concat(Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            self.skip_ws();
            let op = match self.src[self.pos..].chars().next() {
                Some(c @ ('+' | '-')) => c,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.product()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        loop {
            self.skip_ws();
            let rest = &self.src[self.pos..];
            let op = match rest.chars().next() {
                Some(c @ ('*' | '/')) => c,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.primary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Err("expression expected".into());
        };
        if c == '(' {
            self.pos += 1;
            let e = self.expr()?;
            if !self.eat(")") {
                return Err("')' expected".into());
            }
            return Ok(e);
        }
        if c == '\'' || c == '"' {
            return self.string(c).map(Expr::Str);
        }
        if c.is_ascii_digit() {
            let len = rest
                .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
                .unwrap_or(rest.len());
            self.pos += len;
            return rest[..len]
                .parse()
                .map(Expr::Num)
                .map_err(|_| format!("malformed number near '{}'", &rest[..len]));
        }
        let root = self.ident().ok_or_else(|| format!("unexpected symbol near '{c}'"))?;
        let mut keys = Vec::new();
        loop {
            if self.eat(".") {
                if self.src[self.pos..].starts_with('.') {
                    // `..` is concatenation, not a key.
                    self.pos -= 1;
                    break;
                }
                let key = self.ident().ok_or("name expected after '.'")?;
                keys.push(Expr::Str(key));
            } else if self.eat("[") {
                let key = self.expr()?;
                if !self.eat("]") {
                    return Err("']' expected".into());
                }
                keys.push(key);
            } else {
                break;
            }
        }
        Ok(Expr::Path(root, keys))
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let first = rest.chars().next()?;
        if !(first.is_ascii_alphabetic() || first == '_') {
            return None;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        Some(rest[..len].to_owned())
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, other)) => out.push(other),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err("unfinished string".into())
    }
}

fn eval(e: &Expr, env: &Env<'_>) -> Result<Val, String> {
    Ok(match e {
        Expr::Str(s) => Val::Str(s.clone()),
        Expr::Num(n) => Val::Num(*n),
        Expr::Or(a, b) => {
            let a = eval(a, env)?;
            if a.truthy() { a } else { eval(b, env)? }
        }
        Expr::Concat(a, b) => {
            let (a, b) = (eval(a, env)?, eval(b, env)?);
            if matches!(a, Val::Nil) || matches!(b, Val::Nil) {
                return Err("attempt to concatenate a nil value".into());
            }
            Val::Str(a.text()? + &b.text()?)
        }
        Expr::Arith(op, a, b) => {
            let (a, b) = (eval(a, env)?, eval(b, env)?);
            let (Some(x), Some(y)) = (a.number(), b.number()) else {
                return Err("attempt to perform arithmetic on a non-number value".into());
            };
            Val::Num(match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                _ => x / y,
            })
        }
        Expr::Path(root, keys) => {
            let key = |i: usize| -> Result<Option<Val>, String> { keys.get(i).map(|k| eval(k, env)).transpose() };
            let first = key(0)?;
            if keys.len() > 1 {
                return Ok(Val::Nil);
            }
            let list = |values: Vec<String>| match values.len() {
                0 => Val::Nil,
                1 => Val::Str(values.into_iter().next().unwrap_or_default()),
                _ => Val::List(values),
            };
            match (root.as_str(), first) {
                ("headers", Some(k)) => {
                    let name = k.text()?.to_ascii_lowercase().replace('_', "-");
                    env.headers.get(&name).map_or(Val::Nil, |v| list(v.clone()))
                }
                ("query_params", Some(k)) => match env.query.get(&k.text()?) {
                    None => Val::Nil,
                    Some(v) if v.len() == 1 => v[0].clone().map_or(Val::Str("true".into()), Val::Str),
                    Some(v) => list(v.iter().map(|x| x.clone().unwrap_or_else(|| "true".into())).collect()),
                },
                ("shared", Some(k)) => {
                    let k = k.text()?;
                    env.shared.and_then(|s| s.0.get(&k).cloned()).map_or(Val::Nil, Val::Str)
                }
                ("uri_captures", Some(Val::Num(n))) => env
                    .captures_unnamed
                    .get(n as usize)
                    .map_or(Val::Nil, |s| Val::Str(s.clone())),
                ("uri_captures", Some(k)) => {
                    let k = k.text()?;
                    match k.parse::<usize>() {
                        Ok(n) => env.captures_unnamed.get(n).map_or(Val::Nil, |s| Val::Str(s.clone())),
                        Err(_) => env.captures_named.get(&k).map_or(Val::Nil, |s| Val::Str(s.clone())),
                    }
                }
                _ => Val::Nil,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_render(t: &str) -> Result<String, String> {
        let headers: BTreeMap<String, Vec<String>> = [
            ("x-user".to_owned(), vec!["bob".to_owned()]),
            ("x-two".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
        ]
        .into();
        let query: BTreeMap<String, Vec<Option<String>>> = [
            ("q".to_owned(), vec![Some("1".to_owned())]),
            ("flag".to_owned(), vec![None]),
        ]
        .into();
        let unnamed = vec!["/users/7".to_owned(), "7".to_owned()];
        let named = [("user1".to_owned(), "7".to_owned())].into();
        let shared = SharedValues([("tenant".to_owned(), "acme".to_owned())].into());
        let env = Env {
            headers: &headers,
            query: &query,
            captures_unnamed: &unnamed,
            captures_named: &named,
            shared: Some(&shared),
        };
        Template::parse(t)?.render(&env)
    }

    #[test]
    fn templates_render_the_request() {
        assert_eq!(env_render("plain").unwrap(), "plain");
        assert_eq!(env_render("u=$(headers['X-User'])").unwrap(), "u=bob");
        assert_eq!(env_render("$(headers.x_user)").unwrap(), "bob");
        assert_eq!(env_render("t=$(shared.tenant)").unwrap(), "t=acme");
        assert_eq!(env_render("$(shared.nope or 'none')").unwrap(), "none");
        assert_eq!(env_render("$(query_params.q)-$(query_params.flag)").unwrap(), "1-true");
        assert_eq!(env_render("$(uri_captures.user1 or 'default1')").unwrap(), "7");
        assert_eq!(env_render("$(uri_captures.nope or 'default1')").unwrap(), "default1");
        assert_eq!(env_render("$(10 * uri_captures.user1)").unwrap(), "70");
        assert_eq!(env_render("$(uri_captures[1] .. '!')").unwrap(), "7!");
        assert_eq!(env_render("$(headers.missing)").unwrap(), "");
        assert_eq!(
            env_render("$('$(uri_captures.user1)')").unwrap(),
            "$(uri_captures.user1)"
        );
        assert!(env_render("$(headers.missing .. 'x')").is_err());
        assert!(Template::parse("$(headers[)").is_err());
        assert!(Template::parse("$(1 +)").is_err());
        assert!(Template::parse("$(open").is_err());
    }
}
