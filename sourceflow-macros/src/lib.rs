//! Derives and attributes for sourceflow (placeholder).
use proc_macro::TokenStream;

/// Derive `Command`.
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
/// Derive `Event`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
/// Derive `Entity`.
#[proc_macro_derive(Entity, attributes(entity))]
pub fn derive_entity(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
/// Derive `ViewModel`.
#[proc_macro_derive(ViewModel, attributes(view_model))]
pub fn derive_view_model(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
/// saga
#[proc_macro_attribute]
pub fn saga(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// handles
#[proc_macro_attribute]
pub fn handles(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// view
#[proc_macro_attribute]
pub fn view(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// projects_on
#[proc_macro_attribute]
pub fn projects_on(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// aggregate
#[proc_macro_attribute]
pub fn aggregate(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// subscribes
#[proc_macro_attribute]
pub fn subscribes(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
