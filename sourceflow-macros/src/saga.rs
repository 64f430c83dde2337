//! `#[saga]`: an impl block whose `#[handles]` methods handle commands.

use proc_macro2::TokenStream;
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
        form: "name = \"bank.AccountSaga\"",
    },
];

struct SagaArgs {
    entity: Option<Type>,
    name: Option<LitStr>,
}

/// One validated `#[handles]` method.
struct Route {
    handler: Handler,
    command: Type,
    entity: Option<Type>,
    has_context: bool,
}

/// Expands `#[saga(..)] impl X { .. }`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(args, &mut errors);
    let component = match component::parse(item, Marker::Handles, &mut errors) {
        Ok(component) => component,
        Err(item) => {
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    let routes = validate(&component, &args, &mut errors);
    component.emit(generate(&component, &args, &routes), &errors)
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> SagaArgs {
    let mut args = Args::new("#[saga(..)]", KEYS);
    args.parse(tokens, errors);
    let parsed = SagaArgs {
        entity: args.take_type("entity", errors),
        name: args.take_str("name", errors),
    };
    args.finish(errors);
    parsed
}

fn validate(component: &Component, args: &SagaArgs, errors: &mut Errors) -> Vec<Route> {
    let entity_text = args.entity.as_ref().map(pretty);
    let mut routes: Vec<Route> = Vec::new();
    for marked in &component.methods {
        component::no_marker_args(
            marked,
            "the command comes from the method's argument (`cmd: &Deposit`)",
            errors,
        );
        let sig = &marked.method.sig;
        let command_text = sig
            .inputs
            .iter()
            .find_map(|input| match input {
                syn::FnArg::Typed(t) => match &*t.ty {
                    Type::Reference(r) if r.mutability.is_none() => Some(pretty(&r.elem)),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_else(|| "MyCommand".to_owned());
        let shapes = match &entity_text {
            Some(entity) => vec![
                format!("(&self, entity: &mut {entity}, cmd: &{command_text})"),
                format!(
                    "(&self, entity: &mut {entity}, cmd: &{command_text}, cx: &mut SagaContext)"
                ),
            ],
            None => vec![
                format!("(&self, cmd: &{command_text})"),
                format!("(&self, cmd: &{command_text}, cx: &mut SagaContext)"),
            ],
        };
        let expect = Expectation {
            marker: "#[handles]",
            noun: "command",
            state: format!(
                "entity `&mut {}`",
                entity_text.as_deref().unwrap_or("MyEntity")
            ),
            shapes: &shapes,
        };
        let Some(handler) = signature::analyze(sig, &expect, errors) else {
            continue;
        };
        let order: &[Role] = if args.entity.is_some() {
            &[Role::State, Role::Message, Role::Context(Context::Saga)]
        } else {
            &[Role::Message, Role::Context(Context::Saga)]
        };
        let unexpected = |arg: &signature::Arg| match arg.role {
            Role::State => format!(
                "this saga has no entity, so `#[handles]` methods get no `&mut` state: declare \
                 it with `#[saga(entity = {})]`, or remove this argument",
                pretty(&arg.ty)
            ),
            Role::Context(cx) => format!(
                "`#[handles]` methods get `&mut SagaContext`; `{}` is for `{}` methods",
                cx.type_name(),
                cx.marker()
            ),
            Role::Meta => "`#[handles]` methods get no `&EventMeta` (that is for projections); \
                           read the command's metadata from `cx: &mut SagaContext`"
                .to_owned(),
            Role::Message => expect.takes(),
        };
        if !signature::check_order(
            &handler,
            order,
            &[Role::State, Role::Message],
            &expect,
            unexpected,
            errors,
        ) {
            continue;
        }
        let Some(command) = handler.arg(Role::Message).map(|a| a.ty.clone()) else {
            continue;
        };
        if let Some(first) = routes
            .iter()
            .find(|r| signature::same_tokens(&r.command, &command))
        {
            errors.spanned(
                &command,
                format!(
                    "`{}` is already handled by `{}` in this saga: a command has exactly one \
                     handler; merge the two methods",
                    pretty(&command),
                    first.handler.ident
                ),
            );
            continue;
        }
        routes.push(Route {
            entity: handler.arg(Role::State).map(|a| a.ty.clone()),
            has_context: handler.arg(Role::Context(Context::Saga)).is_some(),
            command,
            handler,
        });
    }
    routes
}

fn generate(component: &Component, args: &SagaArgs, routes: &[Route]) -> TokenStream {
    let self_ty = &component.self_ty;
    let mut out = TokenStream::new();
    let state = args.entity.as_ref().map(
        |entity| quote_spanned!(entity.span()=> ::sourceflow::__private::entity_state::<#entity>()),
    );
    out.extend(component.record(Record {
        kind: "Saga",
        name: args.name.as_ref(),
        state,
        background: false,
        version: None,
    }));

    for route in routes {
        let command = &route.command;
        let method = &route.handler.ident;
        let fn_name = format_ident!("__sourceflow_handle_{}", method);
        let mut checks = TokenStream::new();
        let mut call_args = quote!(__saga,);
        let entity_downcast = match (&route.entity, &args.entity) {
            (Some(found), Some(declared)) => {
                checks.extend(quote_spanned! {found.span()=>
                    let _ = ::sourceflow::__private::assert_same_state::<#declared, #found>;
                });
                call_args.extend(quote!(__entity,));
                quote!(let __entity = ::sourceflow::__private::downcast_state::<#found>(__entity)?;)
            }
            _ => quote!(let _ = __entity;),
        };
        call_args.extend(quote!(__command,));
        if route.has_context {
            call_args.extend(quote!(__cx));
        }
        let call = component::call_method(self_ty, &route.handler, call_args);
        out.extend(quote! {
            fn #fn_name<'a>(
                __saga: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __entity: ::core::option::Option<&'a mut (dyn ::core::any::Any + ::core::marker::Send)>,
                __command: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __cx: &'a mut ::sourceflow::SagaContext,
            ) -> ::sourceflow::__private::BoxFuture<'a, ::core::result::Result<(), ::sourceflow::Error>> {
                ::std::boxed::Box::pin(async move {
                    let __saga = ::sourceflow::__private::downcast::<#self_ty>(__saga)?;
                    #entity_downcast
                    let __command = ::sourceflow::__private::downcast::<#command>(__command)?;
                    let _ = &__cx;
                    #call
                })
            }
        });
        if !checks.is_empty() {
            out.extend(quote!(const _: () = { #checks };));
        }
        out.extend(component::route(
            self_ty,
            command,
            MessageKind::Command,
            method,
            quote!(::sourceflow::__private::RouteFn::Handle(#fn_name)),
        ));
    }
    out
}
