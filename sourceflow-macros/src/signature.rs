//! Handler signature analysis: what each argument of a `#[handles]`, `#[projects_on]` or
//! `#[subscribes]` method is, and whether the arguments form one of the supported shapes.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, PatType, Signature, Type};

use crate::attr::{pretty, Errors};

/// A context argument, recognised by the last segment of its type's path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Context {
    /// `&mut SagaContext`.
    Saga,
    /// `&mut ViewContext`.
    View,
    /// `&mut ReactionContext`.
    Reaction,
}

impl Context {
    fn from_type(ty: &Type) -> Option<Context> {
        match last_segment(ty)?.to_string().as_str() {
            "SagaContext" => Some(Context::Saga),
            "ViewContext" => Some(Context::View),
            "ReactionContext" => Some(Context::Reaction),
            _ => None,
        }
    }

    /// The type's name.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Context::Saga => "SagaContext",
            Context::View => "ViewContext",
            Context::Reaction => "ReactionContext",
        }
    }

    /// The method attribute this context belongs to.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Context::Saga => "#[handles]",
            Context::View => "#[projects_on]",
            Context::Reaction => "#[subscribes]",
        }
    }
}

/// What one argument is, by its type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// `&mut T`: the entity or view model the handler changes.
    State,
    /// `&T`: the command or event handled.
    Message,
    /// `&EventMeta`.
    Meta,
    /// `&mut SagaContext`, `&mut ViewContext` or `&mut ReactionContext`.
    Context(Context),
}

/// One typed argument of a handler.
pub(crate) struct Arg {
    /// What the argument is.
    pub(crate) role: Role,
    /// The whole argument (`cmd: &Deposit`), for spans and suggestions.
    pub(crate) tokens: PatType,
    /// The type behind the reference (`Deposit`).
    pub(crate) ty: Type,
}

/// A handler method whose receiver, generics and argument types were checked.
pub(crate) struct Handler {
    /// The method's name.
    pub(crate) ident: Ident,
    /// `async fn` or not.
    pub(crate) is_async: bool,
    /// The typed arguments after `&self`, in order.
    pub(crate) args: Vec<Arg>,
    /// The return type's tokens (empty for `()`), for spans.
    pub(crate) output: TokenStream,
    /// The whole signature, for spans.
    pub(crate) sig: Signature,
}

impl Handler {
    /// The first argument with `role`.
    pub(crate) fn arg(&self, role: Role) -> Option<&Arg> {
        self.args.iter().find(|a| a.role == role)
    }

    /// The span covering the argument list (the parentheses).
    pub(crate) fn inputs_span(&self) -> Span {
        self.sig.paren_token.span.join()
    }
}

/// What a marker expects, for messages: `#[handles]`, "command", the full signature.
pub(crate) struct Expectation<'a> {
    /// `#[handles]`.
    pub(crate) marker: &'static str,
    /// "command" / "event".
    pub(crate) noun: &'static str,
    /// What the `&mut` argument is: "entity `&mut Account`".
    pub(crate) state: String,
    /// The supported signatures, written out with the user's types where known.
    pub(crate) shapes: &'a [String],
}

impl Expectation<'_> {
    /// "`#[handles]` methods take `(..)` or `(..)`".
    pub(crate) fn takes(&self) -> String {
        let shapes: Vec<String> = self.shapes.iter().map(|s| format!("`{s}`")).collect();
        format!(
            "`{}` methods take {}",
            self.marker,
            crate::attr::join_or(&shapes)
        )
    }
}

/// Checks what every handler shares (receiver, no generics, arguments by reference) and
/// classifies the arguments. Returns `None` if the signature cannot be used at all.
pub(crate) fn analyze(
    sig: &Signature,
    expect: &Expectation,
    errors: &mut Errors,
) -> Option<Handler> {
    let mut ok = true;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            format!(
                "generic `{}` methods are not supported: the route table needs one concrete \
                 function per {}; write one method per {} type",
                expect.marker, expect.noun, expect.noun
            ),
        );
        ok = false;
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(
            unsafety,
            format!(
                "`{}` methods cannot be `unsafe`: the runtime calls them; put the `unsafe` block \
                 inside the method",
                expect.marker
            ),
        );
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(
            abi,
            format!(
                "`{}` methods use the Rust ABI: remove `{}`",
                expect.marker,
                pretty(abi)
            ),
        );
        ok = false;
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "variadic handlers are not supported");
        ok = false;
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            let shared_ref = match (&receiver.reference, &receiver.colon_token) {
                (Some(_), None) => receiver.mutability.is_none(),
                (None, Some(_)) => matches!(
                    &*receiver.ty,
                    Type::Reference(r) if r.mutability.is_none() && is_self(&r.elem)
                ),
                _ => false,
            };
            if !shared_ref {
                let found = pretty(receiver);
                let why = if receiver.reference.is_some() || found.contains("&mut") {
                    "the runtime shares one instance between concurrent messages, so it can \
                     only lend `&self`; keep per-entity state in the entity and shared state \
                     behind a lock"
                } else {
                    "the runtime keeps the instance and lends it to each call"
                };
                errors.spanned(
                    receiver,
                    format!(
                        "`{}` methods take `&self`, not `{found}`: {why}",
                        expect.marker
                    ),
                );
                ok = false;
            }
        }
        first => {
            let span = first.map_or_else(|| sig.paren_token.span.join(), Spanned::span);
            errors.at(
                span,
                format!("add `&self` as the first argument: {}", expect.takes()),
            );
            ok = false;
        }
    }

    let mut args = Vec::new();
    let rest: Vec<&FnArg> = match sig.inputs.first() {
        Some(FnArg::Receiver(_)) => inputs.collect(),
        _ => sig.inputs.iter().collect(),
    };
    for input in rest {
        let FnArg::Typed(pat_type) = input else {
            continue;
        };
        match classify(pat_type, expect) {
            Ok(arg) => args.push(arg),
            Err(e) => {
                errors.push(e);
                ok = false;
            }
        }
    }

    let output = match &sig.output {
        syn::ReturnType::Default => TokenStream::new(),
        syn::ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    ok.then(|| Handler {
        ident: sig.ident.clone(),
        is_async: sig.asyncness.is_some(),
        args,
        output,
        sig: sig.clone(),
    })
}

fn classify(pat_type: &PatType, expect: &Expectation) -> syn::Result<Arg> {
    let ty = ungroup(&pat_type.ty);
    let name = pretty(&pat_type.pat);
    let Type::Reference(reference) = ty else {
        let message = match Context::from_type(ty) {
            Some(cx) => format!(
                "take the context by mutable reference: `{name}: &mut {}`",
                cx.type_name()
            ),
            None if last_segment(ty).is_some_and(|s| s == "EventMeta") => {
                format!("take the metadata by reference: `{name}: &EventMeta`")
            }
            None => format!(
                "`{}` methods borrow their arguments: take the {} by reference, \
                 `{name}: &{}` (the runtime keeps the message to deliver it to other handlers)",
                expect.marker,
                expect.noun,
                pretty(ty)
            ),
        };
        return Err(syn::Error::new_spanned(&pat_type.ty, message));
    };
    let inner = ungroup(&reference.elem).clone();
    let mutable = reference.mutability.is_some();
    let role = if let Some(cx) = Context::from_type(&inner) {
        if !mutable {
            return Err(syn::Error::new_spanned(
                &pat_type.ty,
                format!(
                    "take the context by mutable reference: `{name}: &mut {}`",
                    cx.type_name()
                ),
            ));
        }
        Role::Context(cx)
    } else if last_segment(&inner).is_some_and(|s| s == "EventMeta") {
        if mutable {
            return Err(syn::Error::new_spanned(
                &pat_type.ty,
                format!("the metadata is read-only: `{name}: &EventMeta`"),
            ));
        }
        Role::Meta
    } else if mutable {
        Role::State
    } else {
        Role::Message
    };
    Ok(Arg {
        role,
        tokens: pat_type.clone(),
        ty: inner,
    })
}

/// Checks that the arguments follow `order` (each role at most once, the `required` ones
/// present, in this order). `unexpected` explains an argument whose role the shape lacks.
pub(crate) fn check_order(
    handler: &Handler,
    order: &[Role],
    required: &[Role],
    expect: &Expectation,
    unexpected: impl Fn(&Arg) -> String,
    errors: &mut Errors,
) -> bool {
    let mut ok = true;
    let mut seen: Vec<Role> = Vec::new();
    for arg in &handler.args {
        if !order.contains(&arg.role) {
            errors.spanned(&arg.tokens, unexpected(arg));
            ok = false;
        } else if seen.contains(&arg.role) {
            errors.spanned(
                &arg.tokens,
                format!(
                    "a second {} argument: remove `{}`; {}",
                    role_noun(arg.role, expect),
                    pretty(&arg.tokens),
                    expect.takes()
                ),
            );
            ok = false;
        } else {
            seen.push(arg.role);
        }
    }
    for role in required {
        if !seen.contains(role) && order.contains(role) {
            errors.at(
                handler.inputs_span(),
                format!(
                    "missing the {} argument: {}",
                    role_noun(*role, expect),
                    expect.takes()
                ),
            );
            ok = false;
        }
    }
    if !ok {
        return false;
    }
    let positions: Vec<usize> = handler
        .args
        .iter()
        .filter_map(|a| order.iter().position(|r| *r == a.role))
        .collect();
    if positions.windows(2).any(|w| w[0] > w[1]) {
        let mut sorted: Vec<&Arg> = handler.args.iter().collect();
        sorted.sort_by_key(|a| order.iter().position(|r| *r == a.role));
        let written: Vec<String> = std::iter::once("&self".to_owned())
            .chain(sorted.iter().map(|a| pretty(&a.tokens)))
            .collect();
        errors.at(
            handler.inputs_span(),
            format!(
                "the arguments are in the wrong order: write `fn {}({})`; {}",
                handler.ident,
                written.join(", "),
                expect.takes()
            ),
        );
        return false;
    }
    true
}

fn role_noun(role: Role, expect: &Expectation) -> String {
    match role {
        Role::State => expect.state.clone(),
        Role::Message => expect.noun.to_owned(),
        Role::Meta => "`&EventMeta`".to_owned(),
        Role::Context(cx) => format!("`&mut {}`", cx.type_name()),
    }
}

/// The last identifier of a path type (`SagaContext` in `sourceflow::SagaContext`).
pub(crate) fn last_segment(ty: &Type) -> Option<&Ident> {
    match ungroup(ty) {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

fn is_self(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s == "Self")
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => ungroup(&group.elem),
        Type::Paren(paren) => ungroup(&paren.elem),
        other => other,
    }
}

/// The same type written the same way (`Deposit` twice), for duplicate detection.
pub(crate) fn same_tokens(a: &Type, b: &Type) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}
