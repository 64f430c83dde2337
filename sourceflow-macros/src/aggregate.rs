//! `#[aggregate]`: an impl block whose `#[subscribes]` methods react to committed events.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{LitStr, Type};

use crate::attr::{pretty, Args, Errors, Key};
use crate::component::{self, Component, Marker, MessageKind, Record};
use crate::signature::{self, Context, Expectation, Handler, Role};

const KEYS: &[Key] = &[
    Key {
        name: "entity",
        form: "entity = Account",
    },
    Key {
        name: "name",
        form: "name = \"bank.AccountAggregate\"",
    },
];

struct AggregateArgs {
    entity: Option<Type>,
    name: Option<LitStr>,
}

/// One validated `#[subscribes]` method.
struct Route {
    handler: Handler,
    event: Type,
    has_context: bool,
}

/// Expands `#[aggregate(..)] impl X { .. }`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(args, &mut errors);
    let component = match component::parse(item, Marker::Subscribes, &mut errors) {
        Ok(component) => component,
        Err(item) => {
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    let routes = validate(&component, &mut errors);
    component.emit(generate(&component, &args, &routes), &errors)
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> AggregateArgs {
    let mut args = Args::new("#[aggregate(..)]", KEYS);
    args.parse(tokens, errors);
    let parsed = AggregateArgs {
        entity: args.take_type("entity", errors),
        name: args.take_str("name", errors),
    };
    args.finish(errors);
    if parsed.entity.is_none() {
        errors.at(
            Span::call_site(),
            "`#[aggregate]` needs the entity whose events it reacts to: write \
             `#[aggregate(entity = Account)]` (a type deriving `Entity`)",
        );
    }
    parsed
}

fn validate(component: &Component, errors: &mut Errors) -> Vec<Route> {
    let mut routes = Vec::new();
    for marked in &component.methods {
        component::no_marker_args(
            marked,
            "the event comes from the method's argument (`e: &Deposited`)",
            errors,
        );
        let sig = &marked.method.sig;
        let event_text = sig
            .inputs
            .iter()
            .find_map(|input| match input {
                syn::FnArg::Typed(t) => match &*t.ty {
                    Type::Reference(r) if r.mutability.is_none() => Some(pretty(&r.elem)),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_else(|| "MyEvent".to_owned());
        let shapes = vec![
            format!("(&self, e: &{event_text})"),
            format!("(&self, e: &{event_text}, cx: &mut ReactionContext)"),
        ];
        let expect = Expectation {
            marker: "#[subscribes]",
            noun: "event",
            state: "entity".to_owned(),
            shapes: &shapes,
        };
        let Some(handler) = signature::analyze(sig, &expect, errors) else {
            continue;
        };
        let unexpected = |arg: &signature::Arg| match arg.role {
            Role::State => format!(
                "reactions do not change state, so they get no `&mut {}`: {}; to change an \
                 entity, send it a command with `cx.send(..)`",
                pretty(&arg.ty),
                expect.takes()
            ),
            Role::Meta => "read the event's metadata with `cx.meta()`, from \
                           `cx: &mut ReactionContext`, instead of an `&EventMeta` argument"
                .to_owned(),
            Role::Context(cx) => format!(
                "`#[subscribes]` methods get `&mut ReactionContext`; `{}` is for `{}` methods",
                cx.type_name(),
                cx.marker()
            ),
            Role::Message => expect.takes(),
        };
        if !signature::check_order(
            &handler,
            &[Role::Message, Role::Context(Context::Reaction)],
            &[Role::Message],
            &expect,
            unexpected,
            errors,
        ) {
            continue;
        }
        let Some(event) = handler.arg(Role::Message).map(|a| a.ty.clone()) else {
            continue;
        };
        routes.push(Route {
            has_context: handler.arg(Role::Context(Context::Reaction)).is_some(),
            event,
            handler,
        });
    }
    routes
}

fn generate(component: &Component, args: &AggregateArgs, routes: &[Route]) -> TokenStream {
    let self_ty = &component.self_ty;
    let mut out = TokenStream::new();
    let state = args.entity.as_ref().map(
        |entity| quote_spanned!(entity.span()=> ::sourceflow::__private::entity_state::<#entity>()),
    );
    out.extend(component.record(Record {
        kind: "Aggregate",
        name: args.name.as_ref(),
        state,
        background: false,
        version: None,
    }));

    for route in routes {
        let event = &route.event;
        let method = &route.handler.ident;
        let fn_name = format_ident!("__sourceflow_react_{}", method);
        let call_args = if route.has_context {
            quote!(__aggregate, __event, __cx)
        } else {
            quote!(__aggregate, __event)
        };
        let call = component::call_method(self_ty, &route.handler, call_args);
        out.extend(quote! {
            fn #fn_name<'a>(
                __aggregate: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __event: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __cx: &'a mut ::sourceflow::ReactionContext,
            ) -> ::sourceflow::__private::BoxFuture<'a, ::core::result::Result<(), ::sourceflow::Error>> {
                ::std::boxed::Box::pin(async move {
                    let __aggregate = ::sourceflow::__private::downcast::<#self_ty>(__aggregate)?;
                    let __event = ::sourceflow::__private::downcast::<#event>(__event)?;
                    #call
                })
            }
        });
        out.extend(component::route(
            self_ty,
            event,
            MessageKind::Event,
            method,
            quote!(::sourceflow::__private::RouteFn::React(#fn_name)),
        ));
    }
    out
}
