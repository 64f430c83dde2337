//! `#[view]`: an impl block whose `#[projects_on]` methods project events onto view models.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Member, Type};

use crate::attr::{pretty, Args, Errors, Key};
use crate::component::{self, Component, Marked, Marker, MessageKind, Record};
use crate::signature::{self, Context, Expectation, Handler, Role};

const KEYS: &[Key] = &[
    Key {
        name: "model",
        form: "model = AccountSummary",
    },
    Key {
        name: "name",
        form: "name = \"bank.AccountSummaryView\"",
    },
    Key {
        name: "background",
        form: "background",
    },
    Key {
        name: "version",
        form: "version = 2",
    },
];

const MARKER_KEYS: &[Key] = &[Key {
    name: "id",
    form: "id = customer_id",
}];

struct ViewArgs {
    model: Option<Type>,
    name: Option<LitStr>,
    background: Option<Ident>,
    version: Option<syn::LitInt>,
}

/// Which model a projection writes.
enum Target {
    /// `&mut Model`, keyed by the event's entity id or by `id = field`.
    Model {
        model: Box<Type>,
        key: Option<Member>,
    },
    /// `&mut ViewContext`: the method loads and saves models itself.
    Context,
}

/// One validated `#[projects_on]` method.
struct Route {
    handler: Handler,
    event: Type,
    target: Target,
    has_meta: bool,
}

/// Expands `#[view(..)] impl X { .. }`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(args, &mut errors);
    let component = match component::parse(item, Marker::ProjectsOn, &mut errors) {
        Ok(component) => component,
        Err(item) => {
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    let routes = validate(&component, &args, &mut errors);
    component.emit(generate(&component, &args, &routes), &errors)
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> ViewArgs {
    let mut args = Args::new("#[view(..)]", KEYS);
    args.parse(tokens, errors);
    let parsed = ViewArgs {
        model: args.take_type("model", errors),
        name: args.take_str("name", errors),
        background: args.take_flag("background", errors),
        version: args.take_u32("version", errors),
    };
    args.finish(errors);
    if parsed.model.is_none() {
        errors.at(
            Span::call_site(),
            "`#[view]` needs the view model it maintains: write `#[view(model = AccountSummary)]` \
             (a type deriving `ViewModel`)",
        );
    }
    parsed
}

fn marker_key(marked: &Marked, errors: &mut Errors) -> Option<Member> {
    let mut args = Args::new("#[projects_on(..)]", MARKER_KEYS);
    match &marked.attr.meta {
        syn::Meta::Path(_) => return None,
        syn::Meta::List(list) => args.parse(list.tokens.clone(), errors),
        syn::Meta::NameValue(nv) => {
            errors.spanned(
                nv,
                "write `#[projects_on]`, or `#[projects_on(id = customer_id)]` to key the model \
                 by a field of the event",
            );
            return None;
        }
    }
    let key = args.take_member("id", errors);
    args.finish(errors);
    key
}

fn validate(component: &Component, args: &ViewArgs, errors: &mut Errors) -> Vec<Route> {
    let model_text = args
        .model
        .as_ref()
        .map_or_else(|| "MyModel".to_owned(), pretty);
    let mut routes = Vec::new();
    for marked in &component.methods {
        let key = marker_key(marked, errors);
        let sig = &marked.method.sig;
        let event_text = sig
            .inputs
            .iter()
            .find_map(|input| match input {
                syn::FnArg::Typed(t) => match &*t.ty {
                    Type::Reference(r)
                        if r.mutability.is_none()
                            && signature::last_segment(&r.elem)
                                .is_none_or(|s| s != "EventMeta") =>
                    {
                        Some(pretty(&r.elem))
                    }
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_else(|| "MyEvent".to_owned());
        let shapes = vec![
            format!("(&self, model: &mut {model_text}, e: &{event_text})"),
            format!("(&self, model: &mut {model_text}, e: &{event_text}, meta: &EventMeta)"),
            format!("(&self, e: &{event_text}, cx: &mut ViewContext)"),
        ];
        let expect = Expectation {
            marker: "#[projects_on]",
            noun: "event",
            state: format!("view model `&mut {model_text}`"),
            shapes: &shapes,
        };
        let Some(handler) = signature::analyze(sig, &expect, errors) else {
            continue;
        };
        let uses_context = handler.arg(Role::Context(Context::View)).is_some();
        let (order, required): (&[Role], &[Role]) = if uses_context {
            (
                &[Role::Message, Role::Context(Context::View)],
                &[Role::Message, Role::Context(Context::View)],
            )
        } else {
            (
                &[Role::State, Role::Message, Role::Meta],
                &[Role::State, Role::Message],
            )
        };
        let unexpected = |arg: &signature::Arg| match arg.role {
            Role::State => format!(
                "a projection takes either the model (`&mut {}`) or `&mut ViewContext` (to load \
                 and save several models by id), not both: remove one; {}",
                pretty(&arg.ty),
                expect.takes()
            ),
            Role::Meta => "with `&mut ViewContext`, read the metadata with `cx.meta()` instead \
                           of an `&EventMeta` argument"
                .to_owned(),
            Role::Context(cx) => format!(
                "`#[projects_on]` methods get `&mut ViewContext`; `{}` is for `{}` methods",
                cx.type_name(),
                cx.marker()
            ),
            Role::Message => expect.takes(),
        };
        if !signature::check_order(&handler, order, required, &expect, unexpected, errors) {
            continue;
        }
        let Some(event) = handler.arg(Role::Message).map(|a| a.ty.clone()) else {
            continue;
        };
        let target = if uses_context {
            if let Some(key) = &key {
                errors.spanned(
                    key,
                    "`id = ..` picks the model a `&mut Model` projection receives; a projection \
                     taking `&mut ViewContext` loads and saves models by id itself: remove \
                     `id = ..`, or take `model: &mut Model` instead of the context",
                );
                continue;
            }
            Target::Context
        } else {
            match handler.arg(Role::State) {
                Some(state) => Target::Model {
                    model: Box::new(state.ty.clone()),
                    key,
                },
                None => continue,
            }
        };
        routes.push(Route {
            has_meta: handler.arg(Role::Meta).is_some(),
            event,
            target,
            handler,
        });
    }
    routes
}

fn generate(component: &Component, args: &ViewArgs, routes: &[Route]) -> TokenStream {
    let self_ty = &component.self_ty;
    let mut out = TokenStream::new();
    let state = args.model.as_ref().map(|model| {
        quote_spanned!(model.span()=> ::sourceflow::__private::view_model_state::<#model>())
    });
    out.extend(component.record(Record {
        kind: "View",
        name: args.name.as_ref(),
        state,
        background: args.background.is_some(),
        version: args.version.as_ref(),
    }));

    for route in routes {
        let event = &route.event;
        let method = &route.handler.ident;
        let fn_name = format_ident!("__sourceflow_project_{}", method);
        let mut checks = TokenStream::new();
        let body = match &route.target {
            Target::Model { model, key } => {
                if let Some(declared) = &args.model {
                    checks.extend(quote_spanned! {model.span()=>
                        let _ = ::sourceflow::__private::assert_same_state::<#declared, #model>;
                    });
                }
                let id = match key {
                    Some(member) => quote_spanned! {member.span()=>
                        ::sourceflow::__private::key_of(&__event.#member)
                    },
                    None => quote!(::core::clone::Clone::clone(&__meta.stream.id)),
                };
                let meta = if route.has_meta {
                    quote!(, __meta)
                } else {
                    TokenStream::new()
                };
                let call = component::call_method(
                    self_ty,
                    &route.handler,
                    quote!(__view, __model, __event #meta),
                );
                quote! {
                    let __id: ::sourceflow::EntityId = #id;
                    let __model = ::sourceflow::__private::model_mut::<#model>(__cx, &__id).await?;
                    #call?;
                    ::core::result::Result::Ok(())
                }
            }
            Target::Context => {
                let call =
                    component::call_method(self_ty, &route.handler, quote!(__view, __event, __cx));
                quote! {
                    let _ = __meta;
                    #call
                }
            }
        };
        out.extend(quote! {
            fn #fn_name<'a>(
                __view: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __event: &'a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __meta: &'a ::sourceflow::EventMeta,
                __cx: &'a mut ::sourceflow::ViewContext,
            ) -> ::sourceflow::__private::BoxFuture<'a, ::core::result::Result<(), ::sourceflow::Error>> {
                ::std::boxed::Box::pin(async move {
                    let __view = ::sourceflow::__private::downcast::<#self_ty>(__view)?;
                    let __event = ::sourceflow::__private::downcast::<#event>(__event)?;
                    #body
                })
            }
        });
        if !checks.is_empty() {
            out.extend(quote!(const _: () = { #checks };));
        }
        out.extend(component::route(
            self_ty,
            event,
            MessageKind::Event,
            method,
            quote!(::sourceflow::__private::RouteFn::Project(#fn_name)),
        ));
    }
    out
}
