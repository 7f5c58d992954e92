//! Conditions: the one small syntax used by `if:`, `when:`, `suppress:` and
//! `where:`.
//!
//! ```text
//! contact.plan == "pro" and not (contact.cart_total < 20 or contact.vip == true)
//! trigger.text contains "price"
//! steps.ask.output.reply != null
//! ```
//!
//! Operands are paths (`contact.*`, `trigger.*`, `steps.<id>.output.*`,
//! `workflow.*`, `now`), strings in double quotes, numbers, `true`, `false`
//! and `null`. Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `contains`;
//! combined with `and`, `or`, `not` and parentheses. A path alone is true
//! when it holds a value other than `false`, `null`, `0` or `""`. A
//! comparison with a missing value (a path that holds nothing) is false,
//! whatever its operator, unless it compares with the literal `null`:
//! `contact.plan != "pro"` does not hold for a contact with no plan.

use serde_json::Value;

/// The roots a path may start with.
pub const ROOTS: &[&str] = &["contact", "trigger", "steps", "workflow", "now"];

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare { left: Operand, op: Op, right: Operand },
    Truthy(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Vec<String>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

/// A parse error: the message, and the 0-based character offset it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub offset: usize,
    pub message: String,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, at: 0, end: text.chars().count() };
        let condition = parser.or()?;
        match parser.peek() {
            None => Ok(condition),
            Some((offset, token)) => Err(ConditionError {
                offset,
                message: format!("unexpected `{}` after a complete condition", token.show()),
            }),
        }
    }

    /// Every path the condition reads.
    pub fn paths(&self) -> Vec<&[String]> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a [String]>) {
        match self {
            Condition::And(all) | Condition::Or(all) => all.iter().for_each(|c| c.collect_paths(out)),
            Condition::Not(inner) => inner.collect_paths(out),
            Condition::Compare { left, right, .. } => {
                for operand in [left, right] {
                    if let Operand::Path(path) = operand {
                        out.push(path);
                    }
                }
            }
            Condition::Truthy(Operand::Path(path)) => out.push(path),
            Condition::Truthy(Operand::Literal(_)) => {}
        }
    }

    /// Evaluates against a context object with the roots as keys.
    pub fn evaluate(&self, context: &Value) -> bool {
        match self {
            Condition::And(all) => all.iter().all(|c| c.evaluate(context)),
            Condition::Or(all) => all.iter().any(|c| c.evaluate(context)),
            Condition::Not(inner) => !inner.evaluate(context),
            Condition::Truthy(operand) => truthy(&operand.resolve(context)),
            Condition::Compare { left, op, right } => {
                let (l, r) = (left.resolve(context), right.resolve(context));
                // A comparison with a missing value is false (`contact.cart
                // == trigger.cart` with neither set must not hold); only an
                // explicit `null` literal compares with missing values.
                let missing = |value: &Value, this: &Operand, other: &Operand| {
                    value.is_null() && matches!(this, Operand::Path(_)) && !other.is_null_literal()
                };
                if missing(&l, left, right) || missing(&r, right, left) {
                    return false;
                }
                compare(&l, *op, &r)
            }
        }
    }
}

impl Operand {
    fn is_null_literal(&self) -> bool {
        matches!(self, Operand::Literal(Value::Null))
    }

    fn resolve(&self, context: &Value) -> Value {
        match self {
            Operand::Literal(value) => value.clone(),
            Operand::Path(path) => {
                let mut current = context;
                for segment in path {
                    current = match current {
                        Value::Object(map) => map.get(segment).unwrap_or(&Value::Null),
                        Value::Array(items) => {
                            segment.parse::<usize>().ok().and_then(|i| items.get(i)).unwrap_or(&Value::Null)
                        }
                        _ => &Value::Null,
                    };
                }
                current.clone()
            }
        }
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    match op {
        Op::Eq => loosely_equal(left, right),
        Op::Ne => !loosely_equal(left, right),
        Op::Contains => match (left, right) {
            (Value::String(haystack), Value::String(needle)) => {
                haystack.to_lowercase().contains(&needle.to_lowercase())
            }
            (Value::Array(items), needle) => items.iter().any(|item| loosely_equal(item, needle)),
            _ => false,
        },
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ordering = match (as_number(left), as_number(right)) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => match (left, right) {
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    _ => None,
                },
            };
            matches!(
                (op, ordering),
                (Op::Lt, Some(std::cmp::Ordering::Less))
                    | (Op::Le, Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal))
                    | (Op::Gt, Some(std::cmp::Ordering::Greater))
                    | (Op::Ge, Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
            )
        }
    }
}

/// Numbers compare by value whether written `2` or `"2"`, since contact
/// properties often arrive as strings from CSV imports.
fn loosely_equal(left: &Value, right: &Value) -> bool {
    match (as_number(left), as_number(right)) {
        (Some(a), Some(b)) if left.is_number() || right.is_number() => a == b,
        _ => left == right,
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Op(Op),
    Open,
    Close,
}

impl Token {
    fn show(&self) -> String {
        match self {
            Token::Word(w) => w.clone(),
            Token::Str(s) => format!("\"{s}\""),
            Token::Num(n) => n.to_string(),
            Token::Op(op) => format!("{op:?}"),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ConditionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            '"' => {
                let (text, end) = string_at(&chars, start)?;
                i = end;
                Token::Str(text)
            }
            '=' | '!' | '<' | '>' => {
                let (op, len) = operator_at(&chars, start)?;
                i += len;
                Token::Op(op)
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                Token::Num(
                    text.parse()
                        .map_err(|_| ConditionError { offset: start, message: format!("invalid number `{text}`") })?,
                )
            }
            c if c.is_alphanumeric() || c == '_' => {
                while chars.get(i).is_some_and(|d| d.is_alphanumeric() || *d == '_' || *d == '.' || *d == '-') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "contains" { Token::Op(Op::Contains) } else { Token::Word(word) }
            }
            other => {
                return Err(ConditionError { offset: start, message: format!("unexpected character `{other}`") });
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// The string literal that opens at `start`, with `\` escapes, and the
/// offset after its closing quote.
fn string_at(chars: &[char], start: usize) -> Result<(String, usize), ConditionError> {
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(ConditionError { offset: start, message: "unclosed string: add a closing `\"`".into() });
            }
            Some('"') => return Ok((s, i + 1)),
            Some('\\') if chars.get(i + 1).is_some() => {
                s.push(chars[i + 1]);
                i += 2;
            }
            Some(&other) => {
                s.push(other);
                i += 1;
            }
        }
    }
}

/// The comparison operator at `start` and its length.
fn operator_at(chars: &[char], start: usize) -> Result<(Op, usize), ConditionError> {
    let c = chars[start];
    match (c, chars.get(start + 1).copied()) {
        ('=', Some('=')) => Ok((Op::Eq, 2)),
        ('!', Some('=')) => Ok((Op::Ne, 2)),
        ('<', Some('=')) => Ok((Op::Le, 2)),
        ('>', Some('=')) => Ok((Op::Ge, 2)),
        ('<', _) => Ok((Op::Lt, 1)),
        ('>', _) => Ok((Op::Gt, 1)),
        _ => Err(ConditionError {
            offset: start,
            message: format!("unknown operator `{c}`: use ==, !=, <, <=, >, >= or contains"),
        }),
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<(usize, &Token)> {
        self.tokens.get(self.at).map(|(offset, token)| (*offset, token))
    }

    fn next(&mut self) -> Option<(usize, Token)> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some((_, Token::Word(w))) if w == word)
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut all = vec![self.and()?];
        while self.is_word("or") {
            self.at += 1;
            all.push(self.and()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Condition::Or(all) })
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut all = vec![self.not()?];
        while self.is_word("and") {
            self.at += 1;
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Condition::And(all) })
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.is_word("not") {
            self.at += 1;
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Condition, ConditionError> {
        if matches!(self.peek(), Some((_, Token::Open))) {
            self.at += 1;
            let inner = self.or()?;
            return match self.next() {
                Some((_, Token::Close)) => Ok(inner),
                Some((offset, token)) => {
                    Err(ConditionError { offset, message: format!("expected `)`, found `{}`", token.show()) })
                }
                None => Err(ConditionError { offset: self.end, message: "missing `)`".into() }),
            };
        }
        let left = self.operand()?;
        if let Some((_, Token::Op(op))) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.operand()?;
            return Ok(Condition::Compare { left, op, right });
        }
        Ok(Condition::Truthy(left))
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        match self.next() {
            Some((_, Token::Str(s))) => Ok(Operand::Literal(Value::String(s))),
            Some((_, Token::Num(n))) => Ok(Operand::Literal(serde_json::json!(n))),
            Some((offset, Token::Word(word))) => match word.as_str() {
                "true" => Ok(Operand::Literal(Value::Bool(true))),
                "false" => Ok(Operand::Literal(Value::Bool(false))),
                "null" => Ok(Operand::Literal(Value::Null)),
                "and" | "or" | "not" => {
                    Err(ConditionError { offset, message: format!("expected a value before `{word}`") })
                }
                _ => {
                    let path: Vec<String> = word.split('.').map(str::to_string).collect();
                    if path.iter().any(String::is_empty) {
                        return Err(ConditionError { offset, message: format!("invalid path `{word}`") });
                    }
                    if !ROOTS.contains(&path[0].as_str()) {
                        return Err(ConditionError {
                            offset,
                            message: format!(
                                "unknown variable `{word}`: paths start with contact, trigger, steps, workflow or now; \
                                 write text in double quotes"
                            ),
                        });
                    }
                    Ok(Operand::Path(path))
                }
            },
            Some((offset, token)) => {
                Err(ConditionError { offset, message: format!("expected a value, found `{}`", token.show()) })
            }
            None => Err(ConditionError {
                offset: self.end,
                message: "the condition ends too early: a value is missing".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(text: &str, context: Value) -> bool {
        Condition::parse(text).expect(text).evaluate(&context)
    }

    #[test]
    fn comparisons_and_logic() {
        let ctx = json!({"contact": {"plan": "pro", "cart_total": "42.5", "vip": false, "tags": ["a", "b"]}});
        assert!(eval(r#"contact.plan == "pro""#, ctx.clone()));
        assert!(eval("contact.cart_total > 20", ctx.clone()));
        assert!(eval(r#"contact.plan == "pro" and not contact.vip"#, ctx.clone()));
        assert!(eval(
            r#"contact.plan == "free" or (contact.cart_total >= 42.5 and contact.tags contains "b")"#,
            ctx.clone()
        ));
        assert!(!eval("contact.missing", ctx.clone()));
        assert!(eval("contact.missing == null", ctx));
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        assert_eq!(Condition::parse("contact.plan = 1").expect_err("single =").offset, 13);
        let err = Condition::parse("plan == \"pro\"").expect_err("no root");
        assert_eq!(err.offset, 0);
        assert!(err.message.contains("unknown variable `plan`"), "{}", err.message);
        assert!(Condition::parse("contact.a ==").expect_err("no value").message.contains("ends too early"));
        assert!(Condition::parse("(contact.a").expect_err("paren").message.contains("missing `)`"));
        assert!(Condition::parse("contact.a == \"x").expect_err("string").message.contains("unclosed string"));
    }
}
