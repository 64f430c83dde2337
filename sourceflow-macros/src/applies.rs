//! `#[applies]`: an impl block of an entity whose methods fold the entity's own events, so the
//! entity's state is rebuilt from its events instead of by re-running its commands.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type};

use crate::attr::Errors;

const FORM: &str = "an applier is `fn(&mut self, e: &Event)` or \
                    `fn(&mut self, e: &Event, meta: &EventMeta)`, returning nothing";

/// One checked applier method.
struct Applier {
    method: syn::Ident,
    event: Type,
    with_meta: bool,
}

/// Expands `#[applies] impl Entity { .. }`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.spanned(&args, "`#[applies]` takes no arguments");
    }
    let block = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(block) => block,
        Err(_) => {
            errors.at(
                Span::call_site(),
                "`#[applies]` goes on an inherent impl block of an entity: \
                 `#[applies] impl Account { fn deposited(&mut self, e: &Deposited) { .. } }`",
            );
            let error = errors.to_compile_errors();
            return quote!(#item #error);
        }
    };
    if let Some((_, path, _)) = &block.trait_ {
        errors.spanned(
            path,
            "`#[applies]` goes on an inherent impl block, not a trait impl",
        );
    }
    if !block.generics.params.is_empty() {
        errors.spanned(
            &block.generics,
            "entities are not generic: remove the parameters",
        );
    }
    let mut appliers = Vec::new();
    for item in &block.items {
        match item {
            ImplItem::Fn(method) => {
                if let Some(applier) = check(method, &mut errors) {
                    appliers.push(applier);
                }
            }
            other => errors.spanned(
                other,
                format!("an `#[applies]` block holds applier methods only: {FORM}"),
            ),
        }
    }
    if appliers.is_empty() && errors.is_empty() {
        errors.spanned(&block.self_ty, format!("no applier in the block: {FORM}"));
    }
    if !errors.is_empty() {
        let error = errors.to_compile_errors();
        return quote!(#block #error);
    }
    generate(&block, &appliers)
}

fn check(method: &ImplItemFn, errors: &mut Errors) -> Option<Applier> {
    let sig = &method.sig;
    if let Some(asyncness) = sig.asyncness {
        errors.spanned(asyncness, format!("appliers are not `async`: {FORM}"));
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(&sig.generics, format!("appliers are not generic: {FORM}"));
    }
    let is_unit = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()),
    };
    if !is_unit {
        errors.spanned(
            &sig.output,
            format!("an applier cannot fail or return a value: the event is a fact; {FORM}"),
        );
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let receiver_ok = matches!(inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some());
    if !receiver_ok {
        errors.spanned(
            &sig.ident,
            format!("an applier takes `&mut self` first: {FORM}"),
        );
        return None;
    }
    let typed: Vec<&Type> = inputs[1..]
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let event = match typed.first() {
        Some(Type::Reference(r)) if r.mutability.is_none() => (*r.elem).clone(),
        Some(other) => {
            errors.spanned(other, format!("take the event by shared reference: {FORM}"));
            return None;
        }
        None => {
            errors.spanned(&sig.inputs, format!("an applier takes the event: {FORM}"));
            return None;
        }
    };
    let with_meta = match typed.get(1) {
        None => false,
        Some(Type::Reference(r)) if matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "EventMeta")) => {
            true
        }
        Some(other) => {
            errors.spanned(
                other,
                format!("the second argument is `&EventMeta`: {FORM}"),
            );
            return None;
        }
    };
    if typed.len() > 2 {
        errors.spanned(typed[2], format!("too many arguments: {FORM}"));
        return None;
    }
    Some(Applier {
        method: sig.ident.clone(),
        event,
        with_meta,
    })
}

fn generate(block: &ItemImpl, appliers: &[Applier]) -> TokenStream {
    let self_ty = &block.self_ty;
    let private = quote!(::sourceflow::__private);
    let assert_entity = quote_spanned! {self_ty.span()=>
        const _: fn() = || {
            fn applies_to_an_entity<T: ::sourceflow::Entity>() {}
            applies_to_an_entity::<#self_ty>();
        };
    };
    let mut out = quote! {
        #block
        #assert_entity
    };
    for applier in appliers {
        let method = &applier.method;
        let event = &applier.event;
        let function = format_ident!("__sourceflow_apply_{}", method);
        let call = if applier.with_meta {
            quote!(state.#method(event, meta))
        } else {
            quote!(state.#method(event))
        };
        let assert_event = quote_spanned! {event.span()=>
            const _: fn() = || {
                fn applies_an_event<T: ::sourceflow::Event>() {}
                applies_an_event::<#event>();
            };
        };
        let method_name = method.to_string();
        out.extend(quote! {
            #assert_event
            const _: () = {
                fn #function(
                    state: &mut (dyn ::std::any::Any + ::std::marker::Send),
                    event: &(dyn ::std::any::Any + ::std::marker::Send + ::std::marker::Sync),
                    meta: &::sourceflow::EventMeta,
                ) -> ::std::result::Result<(), ::sourceflow::Error> {
                    let _ = meta;
                    let state = #private::downcast_state::<#self_ty>(::std::option::Option::Some(state))?;
                    let event = #private::downcast::<#event>(event)?;
                    #call;
                    ::std::result::Result::Ok(())
                }
                #private::inventory::submit! {
                    #private::ApplierRecord {
                        entity: #private::type_id_of::<#self_ty>,
                        event: #private::type_id_of::<#event>,
                        event_name: #private::message_name::<#event>,
                        method: #method_name,
                        apply: #function,
                    }
                }
            };
        });
    }
    out
}
