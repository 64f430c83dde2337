//! Attribute arguments shared by every macro (`key = value` and flag lists), and the error
//! collector every macro reports through.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitInt, LitStr, Member, Path, Token, Type};

/// Every problem found in one macro input, reported together (serde_derive's `Ctxt`).
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records an error spanned on `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// True while nothing went wrong.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The collected errors as `compile_error!` invocations (empty if there are none).
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        self.0
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// A key an attribute accepts, with the form shown in error messages.
pub(crate) struct Key {
    /// The key itself (`entity`).
    pub(crate) name: &'static str,
    /// How to write it (`entity = Account`).
    pub(crate) form: &'static str,
}

/// One `key` or `key = value` argument, value kept as raw tokens until a macro says what it is.
struct Arg {
    key: Ident,
    value: Option<TokenStream>,
}

/// The arguments of one attribute (or of several attributes of the same name, merged).
pub(crate) struct Args {
    /// How the attribute is written in messages (`#[saga(..)]`).
    what: &'static str,
    keys: &'static [Key],
    args: Vec<Arg>,
}

impl Args {
    /// No arguments yet.
    pub(crate) fn new(what: &'static str, keys: &'static [Key]) -> Self {
        Self {
            what,
            keys,
            args: Vec::new(),
        }
    }

    /// Parses `key = value, flag, ...` and adds the arguments; syntax errors go to `errors`.
    pub(crate) fn parse(&mut self, tokens: TokenStream, errors: &mut Errors) {
        let what = self.what;
        let keys = self.keys;
        let parser = |input: ParseStream| parse_list(input, what, keys);
        match parser.parse2(tokens) {
            Ok(args) => self.args.extend(args),
            Err(e) => errors.push(e),
        }
    }

    /// Removes every occurrence of `key`, reporting duplicates; returns the first.
    fn take(&mut self, key: &str, errors: &mut Errors) -> Option<Arg> {
        let mut found: Option<Arg> = None;
        let mut rest = Vec::with_capacity(self.args.len());
        for arg in self.args.drain(..) {
            if arg.key != key {
                rest.push(arg);
            } else if found.is_some() {
                errors.spanned(
                    &arg.key,
                    format!("`{key}` is given twice in `{}`; keep one", self.what),
                );
            } else {
                found = Some(arg);
            }
        }
        self.args = rest;
        found
    }

    fn form(&self, key: &str) -> &'static str {
        self.keys
            .iter()
            .find(|k| k.name == key)
            .map_or("", |k| k.form)
    }

    /// The value of `key`, which must be present with a value.
    fn take_value(&mut self, key: &str, errors: &mut Errors) -> Option<(Ident, TokenStream)> {
        let arg = self.take(key, errors)?;
        match arg.value {
            Some(value) if !value.is_empty() => Some((arg.key, value)),
            _ => {
                errors.spanned(
                    &arg.key,
                    format!(
                        "`{key}` needs a value: write `{}` in `{}`",
                        self.form(key),
                        self.what
                    ),
                );
                None
            }
        }
    }

    /// `key = Type`.
    pub(crate) fn take_type(&mut self, key: &str, errors: &mut Errors) -> Option<Type> {
        let (_, value) = self.take_value(key, errors)?;
        match syn::parse2::<Type>(value.clone()) {
            Ok(ty) => Some(ty),
            Err(_) => {
                errors.spanned(
                    value,
                    format!("`{key}` takes a type: write `{}`", self.form(key)),
                );
                None
            }
        }
    }

    /// `key = "text"`, non-empty.
    pub(crate) fn take_str(&mut self, key: &str, errors: &mut Errors) -> Option<LitStr> {
        let (_, value) = self.take_value(key, errors)?;
        match syn::parse2::<LitStr>(value.clone()) {
            Ok(lit) if lit.value().trim().is_empty() => {
                errors.spanned(
                    lit,
                    format!("`{key}` must not be empty: write `{}`", self.form(key)),
                );
                None
            }
            Ok(lit) => Some(lit),
            Err(_) => {
                errors.spanned(
                    value,
                    format!("`{key}` takes a string literal: write `{}`", self.form(key)),
                );
                None
            }
        }
    }

    /// `key = ["a", "b"]`: non-empty string literals, each once.
    pub(crate) fn take_str_list(&mut self, key: &str, errors: &mut Errors) -> Vec<LitStr> {
        let Some((_, value)) = self.take_value(key, errors) else {
            return Vec::new();
        };
        let Ok(array) = syn::parse2::<syn::ExprArray>(value.clone()) else {
            errors.spanned(
                value,
                format!(
                    "`{key}` takes a list of strings: write `{}`",
                    self.form(key)
                ),
            );
            return Vec::new();
        };
        let mut names: Vec<LitStr> = Vec::new();
        for element in array.elems {
            match element {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(lit),
                    ..
                }) => {
                    if lit.value().trim().is_empty() {
                        errors.spanned(&lit, format!("`{key}` entries must not be empty"));
                    } else if names.iter().any(|n| n.value() == lit.value()) {
                        errors.spanned(
                            &lit,
                            format!("{:?} is listed twice in `{key}`", lit.value()),
                        );
                    } else {
                        names.push(lit);
                    }
                }
                other => errors.spanned(
                    other,
                    format!("`{key}` takes string literals: write `{}`", self.form(key)),
                ),
            }
        }
        names
    }

    /// `key = 2`: a `u32` of at least 1.
    pub(crate) fn take_u32(&mut self, key: &str, errors: &mut Errors) -> Option<LitInt> {
        let (_, value) = self.take_value(key, errors)?;
        let lit = match syn::parse2::<LitInt>(value.clone()) {
            Ok(lit) => lit,
            Err(_) => {
                errors.spanned(
                    value,
                    format!("`{key}` takes an integer: write `{}`", self.form(key)),
                );
                return None;
            }
        };
        match lit.base10_parse::<u32>() {
            Ok(n) if n >= 1 => Some(LitInt::new(&n.to_string(), lit.span())),
            _ => {
                errors.spanned(
                    lit,
                    format!("`{key}` must be a whole number from 1 to {}", u32::MAX),
                );
                None
            }
        }
    }

    /// `key = path::to::item`, or the bare flag `key` (returned as `Err(flag)`).
    pub(crate) fn take_path_or_flag(
        &mut self,
        key: &str,
        errors: &mut Errors,
    ) -> Option<Result<Path, Ident>> {
        let arg = self.take(key, errors)?;
        let Some(value) = arg.value else {
            return Some(Err(arg.key));
        };
        match syn::parse2::<Path>(value.clone()) {
            Ok(path) => Some(Ok(path)),
            Err(_) => {
                errors.spanned(
                    value,
                    format!(
                        "`{key}` takes the path of a function: write `{}`",
                        self.form(key)
                    ),
                );
                None
            }
        }
    }

    /// The bare flag `key`.
    pub(crate) fn take_flag(&mut self, key: &str, errors: &mut Errors) -> Option<Ident> {
        let arg = self.take(key, errors)?;
        if let Some(value) = arg.value {
            errors.spanned(
                value,
                format!(
                    "`{key}` is a flag and takes no value: write `{}`",
                    self.form(key)
                ),
            );
            return None;
        }
        Some(arg.key)
    }

    /// `key = field`: a named field or a tuple index.
    pub(crate) fn take_member(&mut self, key: &str, errors: &mut Errors) -> Option<Member> {
        let (_, value) = self.take_value(key, errors)?;
        match syn::parse2::<Member>(value.clone()) {
            Ok(member) => Some(member),
            Err(_) => {
                errors.spanned(
                    value,
                    format!(
                        "`{key}` names one field of the event: write `{}`",
                        self.form(key)
                    ),
                );
                None
            }
        }
    }

    /// Reports every argument no `take_*` claimed.
    pub(crate) fn finish(self, errors: &mut Errors) {
        for arg in self.args {
            errors.spanned(&arg.key, unknown_key(&arg.key, self.what, self.keys));
        }
    }
}

fn unknown_key(key: &Ident, what: &str, keys: &[Key]) -> String {
    let key = key.unraw().to_string();
    if keys.is_empty() {
        return format!("`{what}` takes no arguments");
    }
    let forms: Vec<String> = keys.iter().map(|k| format!("`{}`", k.form)).collect();
    let mut message = format!(
        "unknown key `{key}` in `{what}`; expected {}",
        join_or(&forms)
    );
    if let Some(close) = keys
        .iter()
        .filter(|k| edit_distance(&key, k.name) <= 2)
        .min_by_key(|k| edit_distance(&key, k.name))
    {
        message.push_str(&format!(" (did you mean `{}`?)", close.name));
    }
    message
}

/// "`a`", "`a` or `b`", "`a`, `b` or `c`".
pub(crate) fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `key (= value)?, ...` where a value runs to the next comma outside `<...>`.
fn parse_list(input: ParseStream, what: &str, keys: &[Key]) -> syn::Result<Vec<Arg>> {
    let mut args = Vec::new();
    while !input.is_empty() {
        let key = match input.call(Ident::parse_any) {
            Ok(key) => key,
            Err(_) => {
                let forms: Vec<String> = keys.iter().map(|k| format!("`{}`", k.form)).collect();
                let expected = if forms.is_empty() {
                    "no arguments".to_owned()
                } else {
                    join_or(&forms)
                };
                return Err(input.error(format!("`{what}` expects {expected}")));
            }
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(parse_value(input))
        } else {
            None
        };
        args.push(Arg { key, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>().map_err(|_| {
            input.error(format!(
                "expected `,` between the arguments of `{what}`, or the end of the list"
            ))
        })?;
    }
    Ok(args)
}

fn parse_value(input: ParseStream) -> TokenStream {
    let mut value = TokenStream::new();
    let mut angles = 0usize;
    while !input.is_empty() {
        if angles == 0 && input.peek(Token![,]) {
            break;
        }
        let Ok(tree) = input.parse::<TokenTree>() else {
            break;
        };
        if let TokenTree::Punct(punct) = &tree {
            match punct.as_char() {
                '<' => angles += 1,
                '>' => angles = angles.saturating_sub(1),
                _ => {}
            }
        }
        value.extend([tree]);
    }
    value
}

/// Tokens as a person would write them (`&mut Account`, `crate::Deposit`), for messages.
pub(crate) fn pretty(tokens: impl ToTokens) -> String {
    let mut text = tokens.to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" : ", ": "),
        ("& ", "&"),
        (" < ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
    ] {
        text = text.replace(from, to);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn pretty_prints_like_source() {
        assert_eq!(pretty(quote!(&mut crate::Account)), "&mut crate::Account");
        assert_eq!(pretty(quote!(cx: &mut SagaContext)), "cx: &mut SagaContext");
        assert_eq!(pretty(quote!(Vec<u8>)), "Vec<u8>");
    }

    #[test]
    fn suggests_close_keys() {
        assert_eq!(edit_distance("entyty", "entity"), 1);
        assert_eq!(edit_distance("", "name"), 4);
    }
}
