//! What `#[saga]`, `#[view]` and `#[aggregate]` share: reading the `impl` block, finding and
//! stripping the method markers, and emitting the component record.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Type};

use crate::attr::{pretty, Errors};

/// The attribute that marks a handler method.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Marker {
    /// `#[handles]`, inside `#[saga]`.
    Handles,
    /// `#[projects_on]`, inside `#[view]`.
    ProjectsOn,
    /// `#[subscribes]`, inside `#[aggregate]`.
    Subscribes,
}

impl Marker {
    const ALL: [Marker; 3] = [Marker::Handles, Marker::ProjectsOn, Marker::Subscribes];

    /// The attribute's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Marker::Handles => "handles",
            Marker::ProjectsOn => "projects_on",
            Marker::Subscribes => "subscribes",
        }
    }

    /// The impl-block attribute it belongs in.
    pub(crate) fn container(self) -> &'static str {
        match self {
            Marker::Handles => "saga",
            Marker::ProjectsOn => "view",
            Marker::Subscribes => "aggregate",
        }
    }

    /// What the marked method receives.
    fn purpose(self) -> &'static str {
        match self {
            Marker::Handles => "handles a command",
            Marker::ProjectsOn => "projects an event onto a view model",
            Marker::Subscribes => "reacts to an event",
        }
    }

    fn of(attr: &Attribute) -> Option<Marker> {
        let last = attr.path().segments.last()?;
        Marker::ALL.into_iter().find(|m| last.ident == m.name())
    }

    /// The error for a marker used outside its impl block (`within`: the block it is in, if
    /// it is one of ours).
    pub(crate) fn misplaced(self, within: Option<Marker>) -> String {
        let (marker, container) = (self.name(), self.container());
        match within {
            Some(other) => format!(
                "`#[{marker}]` does not belong in a `#[{}]` impl block: it {}, which is the job \
                 of a `#[{container}]` impl; here, mark the method `#[{}]`",
                other.container(),
                self.purpose(),
                other.name()
            ),
            None => format!(
                "`#[{marker}]` only works on methods inside a `#[{container}]` impl block: put \
                 `#[{container}{}]` on the `impl` that contains this method",
                match self {
                    Marker::Handles => "(entity = ..)",
                    Marker::ProjectsOn => "(model = ..)",
                    Marker::Subscribes => "(entity = ..)",
                }
            ),
        }
    }
}

/// A method carrying this component's marker.
pub(crate) struct Marked {
    /// The marker attribute, for its arguments and span.
    pub(crate) attr: Attribute,
    /// The method, as written (markers stripped).
    pub(crate) method: ImplItemFn,
}

/// The `impl` block of a component, markers stripped.
pub(crate) struct Component {
    /// The block to re-emit, with every marker attribute removed.
    pub(crate) item: ItemImpl,
    /// The type the block implements.
    pub(crate) self_ty: Type,
    /// Its last identifier (`AccountSaga`), the default component name.
    pub(crate) ident: Ident,
    /// The marked methods, in order.
    pub(crate) methods: Vec<Marked>,
}

/// Reads the `impl` block of a `#[saga]`/`#[view]`/`#[aggregate]` (`marker` is the method
/// attribute it expects). On a non-impl item, returns `Err` with the item to re-emit.
pub(crate) fn parse(
    item: TokenStream,
    marker: Marker,
    errors: &mut Errors,
) -> Result<Component, TokenStream> {
    let container = marker.container();
    let mut item: ItemImpl = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Impl(item)) => item,
        Ok(other) => {
            errors.at(
                item_span(&other),
                format!(
                    "`#[{container}]` goes on an inherent `impl` block whose methods are marked \
                     `#[{}]`: `#[{container}{}] impl MyType {{ .. }}`",
                    marker.name(),
                    match marker {
                        Marker::ProjectsOn => "(model = MyModel)",
                        _ => "(entity = MyEntity)",
                    }
                ),
            );
            return Err(item);
        }
        Err(e) => {
            errors.push(e);
            return Err(item);
        }
    };

    if let Some((_, path, _)) = &item.trait_ {
        errors.spanned(
            path,
            format!(
                "`#[{container}]` goes on an inherent `impl {}` block, not on a trait impl: \
                 move the `#[{}]` methods into `impl {} {{ .. }}`",
                pretty(&item.self_ty),
                marker.name(),
                pretty(&item.self_ty)
            ),
        );
    }
    let generic_error = |what: &dyn ToTokens| {
        syn::Error::new_spanned(
            what,
            format!(
                "generic {container}s are not supported; the route table needs one concrete \
                 type: implement `#[{container}]` on a concrete type (a non-generic wrapper \
                 struct if needed)"
            ),
        )
    };
    let generic_impl = !item.generics.params.is_empty() || item.generics.where_clause.is_some();
    if generic_impl {
        errors.push(generic_error(&item.generics));
    }
    let ident = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => {
            // `impl<T> Saga<T>` is one mistake: report it once, on the generics.
            if let Some(args) = path
                .path
                .segments
                .iter()
                .find(|s| !s.arguments.is_empty())
                .map(|s| &s.arguments)
                .filter(|_| !generic_impl)
            {
                errors.push(generic_error(args));
            }
            path.path.segments.last().map(|s| s.ident.clone())
        }
        _ => None,
    };
    let ident = ident.unwrap_or_else(|| {
        errors.spanned(
            &item.self_ty,
            format!("`#[{container}]` goes on the `impl` of a named struct or enum"),
        );
        Ident::new("Component", Span::call_site())
    });

    let mut methods = Vec::new();
    for impl_item in &mut item.items {
        match impl_item {
            ImplItem::Fn(method) => {
                let mut found: Option<Attribute> = None;
                for attr in take_markers(&mut method.attrs) {
                    match Marker::of(&attr) {
                        Some(m) if m == marker => {
                            if found.is_some() {
                                errors.spanned(
                                    &attr,
                                    format!("`#[{}]` is given twice; keep one", m.name()),
                                );
                            } else {
                                found = Some(attr);
                            }
                        }
                        Some(m) => errors.spanned(&attr, m.misplaced(Some(marker))),
                        None => {}
                    }
                }
                if let Some(attr) = found {
                    methods.push(Marked {
                        attr,
                        method: method.clone(),
                    });
                }
            }
            ImplItem::Const(c) => report_markers(&mut c.attrs, errors),
            ImplItem::Type(t) => report_markers(&mut t.attrs, errors),
            ImplItem::Macro(m) => report_markers(&mut m.attrs, errors),
            _ => {}
        }
    }

    let self_ty = (*item.self_ty).clone();
    Ok(Component {
        item,
        self_ty,
        ident,
        methods,
    })
}

fn take_markers(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let mut markers = Vec::new();
    attrs.retain(|attr| {
        if Marker::of(attr).is_some() {
            markers.push(attr.clone());
            false
        } else {
            true
        }
    });
    markers
}

fn report_markers(attrs: &mut Vec<Attribute>, errors: &mut Errors) {
    for attr in take_markers(attrs) {
        errors.spanned(
            &attr,
            "handler attributes go on methods (`fn`), not on other items of the impl block",
        );
    }
}

fn item_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Fn(f) => f.sig.ident.span(),
        syn::Item::Struct(s) => s.ident.span(),
        syn::Item::Enum(e) => e.ident.span(),
        syn::Item::Trait(t) => t.ident.span(),
        other => other.span(),
    }
}

/// Reports arguments given to a marker that takes none (`#[handles(Deposit)]`).
pub(crate) fn no_marker_args(marked: &Marked, hint: &str, errors: &mut Errors) {
    if !matches!(marked.attr.meta, syn::Meta::Path(_)) {
        errors.spanned(
            &marked.attr,
            format!(
                "`#[{}]` takes no arguments: {hint}",
                pretty(marked.attr.path())
            ),
        );
    }
}

/// The pieces of a [`ComponentRecord`](sourceflow::registry::ComponentRecord) that differ.
pub(crate) struct Record<'a> {
    /// `Saga`, `View` or `Aggregate`.
    pub(crate) kind: &'static str,
    /// `name = ".."`, if given.
    pub(crate) name: Option<&'a LitStr>,
    /// `entity_state::<T>()` or `view_model_state::<T>()`, spanned on the user's type.
    pub(crate) state: Option<TokenStream>,
    /// Views only.
    pub(crate) background: bool,
    /// Views only: `version = N` (1 when absent).
    pub(crate) version: Option<&'a syn::LitInt>,
}

impl Component {
    /// The registry record of the component and the check that it can be shared between tasks.
    pub(crate) fn record(&self, record: Record) -> TokenStream {
        let self_ty = &self.self_ty;
        let kind = Ident::new(record.kind, Span::call_site());
        let name = match record.name {
            Some(name) => name.clone(),
            None => LitStr::new(&self.ident.to_string(), self.ident.span()),
        };
        let state = match record.state {
            Some(state) => quote!(::core::option::Option::Some(#state)),
            None => quote!(::core::option::Option::None),
        };
        let background = record.background;
        let version = match record.version {
            Some(version) => quote!(#version),
            None => quote!(1),
        };
        let check = quote_spanned! {self_ty.span()=>
            let _ = ::sourceflow::__private::assert_component::<#self_ty>;
        };
        quote! {
            const _: () = {
                #check
            };

            fn __sourceflow_construct() -> ::core::option::Option<::sourceflow::__private::ErasedComponent> {
                use ::sourceflow::__private::{ConstructDefault as _, ConstructNone as _};
                (&&::sourceflow::__private::Construct::<#self_ty>::new()).construct()
            }

            ::sourceflow::__private::inventory::submit! {
                ::sourceflow::__private::ComponentRecord {
                    kind: ::sourceflow::__private::ComponentKind::#kind,
                    name: #name,
                    type_id: ::sourceflow::__private::type_id_of::<#self_ty>,
                    state: #state,
                    construct: __sourceflow_construct,
                    background: #background,
                    version: #version,
                }
            }
        }
    }

    /// The impl block followed by `generated` (or by the errors, if there are any).
    pub(crate) fn emit(&self, generated: TokenStream, errors: &Errors) -> TokenStream {
        let item = &self.item;
        if errors.is_empty() {
            quote! {
                #item
                const _: () = {
                    #generated
                };
            }
        } else {
            let errors = errors.to_compile_errors();
            quote!(#item #errors)
        }
    }
}

/// Which trait a route's message type must implement.
#[derive(Clone, Copy)]
pub(crate) enum MessageKind {
    /// `#[handles]`: a command.
    Command,
    /// `#[projects_on]` / `#[subscribes]`: an event.
    Event,
}

/// The route record of one method. Building it checks that the message type implements the
/// right trait, spanned on the user's type so the error points there.
pub(crate) fn route(
    self_ty: &Type,
    message: &Type,
    kind: MessageKind,
    method: &Ident,
    call: TokenStream,
) -> TokenStream {
    let method = LitStr::new(&method.to_string(), method.span());
    let message_name = match kind {
        MessageKind::Command => quote_spanned! {message.span()=>
            ::sourceflow::__private::command_name::<#message>()
        },
        MessageKind::Event => quote_spanned! {message.span()=>
            ::sourceflow::__private::event_name::<#message>()
        },
    };
    quote! {
        ::sourceflow::__private::inventory::submit! {
            ::sourceflow::__private::RouteRecord {
                component: ::sourceflow::__private::type_id_of::<#self_ty>,
                message: ::sourceflow::__private::type_id_of::<#message>,
                message_name: #message_name,
                method: #method,
                call: #call,
            }
        }
    }
}

/// `Box::pin(async move { .. })` around a handler body, with the call awaited if it is async.
pub(crate) fn call_method(
    self_ty: &Type,
    handler: &crate::signature::Handler,
    args: TokenStream,
) -> TokenStream {
    let method = &handler.ident;
    let call = quote_spanned! {method.span()=> <#self_ty>::#method(#args) };
    let call = if handler.is_async {
        quote_spanned! {method.span()=> #call.await }
    } else {
        call
    };
    let output_span = if handler.output.is_empty() {
        method.span()
    } else {
        handler.output.span()
    };
    // The conversion carries the return type's span, so a return type that is not a handler
    // result is reported on the return type (the call itself keeps the method's span).
    let convert = quote_spanned! {output_span=>
        ::sourceflow::__private::IntoHandlerResult::into_handler_result(__result)
    };
    quote! {{
        let __result = #call;
        #convert
    }}
}
