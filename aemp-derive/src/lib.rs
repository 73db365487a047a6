//! `#[derive(RemoteMessage)]` for [aemp](https://docs.rs/aemp): a message type with an AEMP wire
//! form `[tag, field, ...]`, as `aemp::node::RemoteMessage` describes.
//!
//! ```text
//! #[derive(Serialize, Deserialize, RemoteMessage)]
//! #[remote(tag = "say")]               // one-way: aemp::node::Tell, actix Result = ()
//! struct Say { text: String }
//!
//! #[derive(Serialize, Deserialize, RemoteMessage)]
//! #[remote(tag = "add", reply = i64)]  // request: aemp::node::Request, actix Result = i64
//! struct Add { a: i64, b: i64 }
//! ```
//!
//! It implements `actix::Message` too (do not derive that as well).

use proc_macro::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr, Type, parse_macro_input};

/// Implements `actix::Message`, `aemp::node::RemoteMessage` and either `aemp::node::Tell` or
/// (with `reply = Type`) `aemp::node::Request` for a struct. Attribute: `#[remote(tag = "…")]`
/// or `#[remote(tag = "…", reply = Type)]`.
#[proc_macro_derive(RemoteMessage, attributes(remote))]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let mut tag: Option<LitStr> = None;
    let mut reply: Option<Type> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("remote")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("tag") {
                tag = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("reply") {
                reply = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("expected `tag = \"...\"` or `reply = Type`"))
            }
        })?;
    }
    let Some(tag) = tag else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "RemoteMessage needs #[remote(tag = \"...\")]: the message's first element on the wire",
        ));
    };
    if tag.value().is_empty() {
        return Err(syn::Error::new_spanned(tag, "the tag must not be empty"));
    }
    let name = &input.ident;
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    let private = quote!(::aemp::node::__private);
    let result = match &reply {
        Some(r) => quote!(#r),
        None => quote!(()),
    };
    let kind = match &reply {
        Some(_) => quote! {
            impl #impl_g ::aemp::node::Request for #name #ty_g #where_c {}
        },
        None => quote! {
            impl #impl_g ::aemp::node::Tell for #name #ty_g #where_c {}
        },
    };
    Ok(quote! {
        impl #impl_g #private::actix::Message for #name #ty_g #where_c {
            type Result = #result;
        }
        impl #impl_g ::aemp::node::RemoteMessage for #name #ty_g #where_c {
            const TAG: &'static str = #tag;
        }
        #kind
    })
}
