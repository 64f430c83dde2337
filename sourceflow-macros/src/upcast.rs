//! `#[upcast(Type, from = n)]`: one step from version `n` to `n + 1` of a message type.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitInt, LitStr, Path, ReturnType, Token, Type};

use crate::attr::{Args, Errors, Key};

const KEYS: &[Key] = &[
    Key {
        name: "from",
        form: "from = 1",
    },
    Key {
        name: "name",
        form: "name = \"bank.OldName\"",
    },
];

const FORMS: &str = "an upcaster is `fn(payload: &mut serde_json::Value)` (returning `()` or \
                     `Result<(), E>`) or `fn(old: OldType) -> NewType` (or `Result<NewType, E>`)";

/// What `#[upcast(..)]` says.
struct Attrs {
    target: Path,
    from: LitInt,
    name: Option<LitStr>,
}

/// How the function works on the payload.
enum Shape {
    /// `fn(&mut serde_json::Value)`.
    Json { fallible: bool },
    /// `fn(Old) -> New`.
    Typed { old: Box<Type>, fallible: bool },
}

/// Expands `#[upcast(..)]` on a function.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            errors.at(
                Span::call_site(),
                format!("`#[upcast]` goes on a function: {FORMS}"),
            );
            let error = errors.to_compile_errors();
            return quote!(#item #error);
        }
    };
    let attrs = parse_args(args, &mut errors);
    let shape = check_signature(&function, &mut errors);
    match (attrs, shape) {
        (Some(attrs), Some(shape)) if errors.is_empty() => generate(&function, &attrs, &shape),
        _ => {
            let error = errors.to_compile_errors();
            quote!(#function #error)
        }
    }
}

fn parse_args(args: TokenStream, errors: &mut Errors) -> Option<Attrs> {
    let span = args.span();
    let parser = |input: ParseStream| {
        let target: Path = input.parse()?;
        let rest = if input.is_empty() {
            TokenStream::new()
        } else {
            input.parse::<Token![,]>()?;
            input.parse::<TokenStream>()?
        };
        Ok((target, rest))
    };
    let (target, rest) = match parser.parse2(args) {
        Ok(parsed) => parsed,
        Err(_) => {
            errors.at(
                span,
                "name the message type first: `#[upcast(Deposited, from = 1)]`",
            );
            return None;
        }
    };
    let mut args = Args::new("#[upcast(..)]", KEYS);
    args.parse(rest, errors);
    let from = args.take_u32("from", errors);
    let name = args.take_str("name", errors);
    args.finish(errors);
    let Some(from) = from else {
        // A misspelt `from` is already reported, with the suggestion.
        if errors.is_empty() {
            errors.spanned(
                &target,
                "say which version the step reads: `#[upcast(Deposited, from = 1)]`",
            );
        }
        return None;
    };
    Some(Attrs { target, from, name })
}

fn check_signature(function: &ItemFn, errors: &mut Errors) -> Option<Shape> {
    let sig = &function.sig;
    if let Some(asyncness) = sig.asyncness {
        errors.spanned(
            asyncness,
            format!("upcasters are plain functions, not `async`: {FORMS}"),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!("upcasters cannot be generic: {FORMS}"),
        );
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let [FnArg::Typed(input)] = inputs.as_slice() else {
        errors.spanned(
            &sig.inputs,
            format!("an upcaster takes exactly one argument: {FORMS}"),
        );
        return None;
    };
    let fallible = returns_result(&sig.output);
    match &*input.ty {
        Type::Reference(reference) if is_json_value(&reference.elem) => {
            if reference.mutability.is_none() {
                errors.spanned(
                    reference,
                    "the payload is changed in place: take `&mut serde_json::Value`",
                );
            }
            if !fallible && !matches!(sig.output, ReturnType::Default) && !returns_unit(&sig.output)
            {
                errors.spanned(
                    &sig.output,
                    "an upcaster on `&mut serde_json::Value` returns `()` or `Result<(), E>`",
                );
            }
            Some(Shape::Json { fallible })
        }
        Type::Reference(reference) => {
            errors.spanned(
                reference,
                format!("a typed upcaster takes the old value by value: {FORMS}"),
            );
            None
        }
        old => {
            if matches!(sig.output, ReturnType::Default) || returns_unit(&sig.output) {
                errors.spanned(
                    &sig.ident,
                    format!("a typed upcaster returns the new value: {FORMS}"),
                );
                return None;
            }
            Some(Shape::Typed {
                old: Box::new(old.clone()),
                fallible,
            })
        }
    }
}

fn is_json_value(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Value"))
}

fn returns_result(output: &ReturnType) -> bool {
    matches!(output, ReturnType::Type(_, ty)
        if matches!(&**ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result")))
}

fn returns_unit(output: &ReturnType) -> bool {
    matches!(output, ReturnType::Type(_, ty) if matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()))
}

fn generate(function: &ItemFn, attrs: &Attrs, shape: &Shape) -> TokenStream {
    let ident = &function.sig.ident;
    let target = &attrs.target;
    let from = &attrs.from;
    let private = quote!(::sourceflow::__private);
    let call = match shape {
        Shape::Json { fallible: true } => quote!(#private::json_step(value, #ident)),
        Shape::Json { fallible: false } => quote! {
            #private::json_step(value, |payload| {
                #ident(payload);
                ::std::result::Result::<(), ::std::convert::Infallible>::Ok(())
            })
        },
        Shape::Typed {
            old,
            fallible: true,
        } => quote!(#private::typed_step(value, |old: #old| #ident(old))),
        Shape::Typed {
            old,
            fallible: false,
        } => quote! {
            #private::typed_step(value, |old: #old| {
                ::std::result::Result::<_, ::std::convert::Infallible>::Ok(#ident(old))
            })
        },
    };
    let stored_name = match &attrs.name {
        Some(name) => quote!(::std::option::Option::Some(#name)),
        None => quote!(::std::option::Option::None),
    };
    // One check, on the user's tokens: the target must be a message (a bound error on the
    // type), and `from` below its version (a failed assertion on the number).
    let assert_older = quote_spanned! {from.span()=>
        const _: () = {
            const fn upcast_target<T: ::sourceflow::Message>(from: u32) -> bool {
                from < T::VERSION
            }
            ::std::assert!(
                upcast_target::<#target>(#from),
                "`from` must be below the message type's `version`: a step reads version `from` \
                 and writes `from + 1`"
            );
        };
    };
    quote! {
        #function
        #assert_older
        const _: () = {
            fn step(
                value: #private::JsonValue,
            ) -> ::std::result::Result<#private::JsonValue, ::std::string::String> {
                #call
            }
            #private::inventory::submit! {
                #private::UpcastRecord {
                    target: #private::type_id_of::<#target>,
                    target_name: ::std::any::type_name::<#target>,
                    from: #from,
                    stored_name: #stored_name,
                    step,
                    function: ::std::stringify!(#ident),
                }
            }
        };
    }
}
