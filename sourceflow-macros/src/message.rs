//! `#[derive(Command)]`, `#[derive(Event)]`, `#[derive(Entity)]` and `#[derive(ViewModel)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, LitInt, LitStr, Path};

use crate::attr::{Args, Errors, Key};

/// Which derive is expanding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[derive(Command)]`.
    Command,
    /// `#[derive(Event)]`.
    Event,
    /// `#[derive(Entity)]`.
    Entity,
    /// `#[derive(ViewModel)]`.
    ViewModel,
}

impl Kind {
    fn trait_name(self) -> &'static str {
        match self {
            Kind::Command => "Command",
            Kind::Event => "Event",
            Kind::Entity => "Entity",
            Kind::ViewModel => "ViewModel",
        }
    }

    /// The helper attribute: `command`, `event`, `entity`, `view_model`.
    fn attr(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Event => "event",
            Kind::Entity => "entity",
            Kind::ViewModel => "view_model",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Command => "#[command(..)]",
            Kind::Event => "#[event(..)]",
            Kind::Entity => "#[entity(..)]",
            Kind::ViewModel => "#[view_model(..)]",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Command => "commands",
            Kind::Event => "events",
            Kind::Entity => "entities",
            Kind::ViewModel => "view models",
        }
    }

    fn keys(self) -> &'static [Key] {
        const NAME: Key = Key {
            name: "name",
            form: "name = \"bank.Deposit\"",
        };
        const VERSION: Key = Key {
            name: "version",
            form: "version = 2",
        };
        const ALIASES: Key = Key {
            name: "aliases",
            form: "aliases = [\"bank.OldName\"]",
        };
        const VALIDATE: Key = Key {
            name: "validate",
            form: "validate = path::to_fn",
        };
        const VALIDATE_FLAG: Key = Key {
            name: "validate",
            form: "validate",
        };
        match self {
            Kind::Command | Kind::Event => &[NAME, VERSION, ALIASES, VALIDATE, VALIDATE_FLAG],
            Kind::Entity => &[NAME, VERSION, ALIASES],
            Kind::ViewModel => &[NAME, ALIASES],
        }
    }
}

/// How a message checks itself before it is stored.
enum Validation {
    /// `validate = path`: `fn(&T, &mut Violations)`.
    Function(Path),
    /// `validate`: the type's `Validate` impl.
    Impl(Ident),
}

struct Attrs {
    name: Option<LitStr>,
    version: Option<LitInt>,
    aliases: Vec<LitStr>,
    validate: Option<Validation>,
}

/// Expands one of the four derives.
pub(crate) fn expand(kind: Kind, input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let attrs = parse(kind, &input, &mut errors);
    validate(kind, &input, &mut errors);
    if !errors.is_empty() {
        return errors.to_compile_errors();
    }
    generate(kind, &input, &attrs)
}

fn parse(kind: Kind, input: &DeriveInput, errors: &mut Errors) -> Attrs {
    let mut args = Args::new(kind.what(), kind.keys());
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident(kind.attr()))
    {
        match &attr.meta {
            syn::Meta::Path(_) => {}
            syn::Meta::List(list) => args.parse(list.tokens.clone(), errors),
            syn::Meta::NameValue(nv) => errors.spanned(
                nv,
                format!(
                    "write the arguments in parentheses: `#[{}(name = \"..\")]`",
                    kind.attr()
                ),
            ),
        }
    }
    let name = args.take_str("name", errors);
    let version = match kind {
        Kind::Command | Kind::Event | Kind::Entity => args.take_u32("version", errors),
        Kind::ViewModel => None,
    };
    let aliases = args.take_str_list("aliases", errors);
    if let Some(name) = &name {
        for alias in aliases.iter().filter(|a| a.value() == name.value()) {
            errors.spanned(
                alias,
                format!(
                    "{:?} is the type's own name; `aliases` lists earlier names only",
                    alias.value()
                ),
            );
        }
    }
    let validate = match kind {
        Kind::Command | Kind::Event => {
            args.take_path_or_flag("validate", errors)
                .map(|validate| match validate {
                    Ok(path) => Validation::Function(path),
                    Err(flag) => Validation::Impl(flag),
                })
        }
        _ => None,
    };
    args.finish(errors);
    Attrs {
        name,
        version,
        aliases,
        validate,
    }
}

fn validate(kind: Kind, input: &DeriveInput, errors: &mut Errors) {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.spanned(
            &input.generics,
            format!(
                "generic {} are not supported: a stored payload is decoded into one concrete \
                 type; remove the generic parameters from `{}` (or derive `{}` on a concrete \
                 wrapper type)",
                kind.plural(),
                input.ident,
                kind.trait_name()
            ),
        );
    }
    if let syn::Data::Union(data) = &input.data {
        errors.spanned(
            data.union_token,
            format!(
                "`{}` cannot be derived for a union: use a struct or an enum",
                kind.trait_name()
            ),
        );
    }
}

fn generate(kind: Kind, input: &DeriveInput, attrs: &Attrs) -> TokenStream {
    let ident = &input.ident;
    let name = attrs
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let validate_message = attrs.validate.as_ref().map(|validate| {
        let call = match validate {
            // Through a typed `fn` pointer, so a wrong signature is one error that shows the
            // expected one.
            Validation::Function(path) => quote_spanned! {path.span()=>
                let validate: fn(&Self, &mut ::sourceflow::Violations) = #path;
                validate(self, violations)
            },
            Validation::Impl(flag) => quote_spanned! {flag.span()=>
                ::sourceflow::__private::validate_with_impl::<Self>(self, violations)
            },
        };
        quote! {
            fn validate_message(&self, violations: &mut ::sourceflow::Violations) {
                #call
            }
        }
    });
    let version = attrs
        .version
        .as_ref()
        .map(|version| quote!(const VERSION: u32 = #version;));
    let aliases = (!attrs.aliases.is_empty()).then(|| {
        let aliases = &attrs.aliases;
        quote!(const ALIASES: &'static [&'static str] = &[#(#aliases),*];)
    });
    let message = quote! {
        impl ::sourceflow::Message for #ident {
            const NAME: &'static str = #name;
            #version
            #aliases
            #validate_message
        }
    };
    let (impls, record) = match kind {
        Kind::Command => (
            quote! {
                #message
                impl ::sourceflow::Command for #ident {}
            },
            quote!(::sourceflow::__private::TypeRecord::command::<#ident>()),
        ),
        Kind::Event => (
            quote! {
                #message
                impl ::sourceflow::Event for #ident {}
            },
            quote!(::sourceflow::__private::TypeRecord::event::<#ident>()),
        ),
        Kind::Entity => (
            quote! {
                impl ::sourceflow::Entity for #ident {
                    const NAME: &'static str = #name;
                    #version
                    #aliases
                }
            },
            quote!(::sourceflow::__private::TypeRecord::entity::<#ident>()),
        ),
        Kind::ViewModel => (
            quote! {
                impl ::sourceflow::ViewModel for #ident {
                    const NAME: &'static str = #name;
                    #aliases
                }
            },
            quote!(::sourceflow::__private::TypeRecord::view_model::<#ident>()),
        ),
    };
    quote! {
        #impls
        const _: () = {
            ::sourceflow::__private::inventory::submit! { #record }
        };
    }
}
