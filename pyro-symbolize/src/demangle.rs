//! Demangling of Rust (legacy and v0) and C++ (Itanium) symbol names, in Alloy's four modes.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// How much of a mangled name to keep, as Alloy's `demangle` argument.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Demangle {
    /// Raw symbol names (Alloy's default).
    #[default]
    None,
    /// Demangled without parameters, template/generic arguments or return types:
    /// `std::vector<int>::push_back(int const&)` → `std::vector::push_back`.
    Simplified,
    /// Demangled with template/generic arguments, without parameters or return types.
    Templates,
    /// Fully demangled, parameters included (C++ clone suffixes such as `[clone .cold]` and Rust
    /// hashes dropped).
    Full,
}

/// An unknown demangle mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown demangle mode {mode:?}: expected none, simplified, templates or full")]
pub struct ParseDemangleError {
    /// The value given.
    pub mode: String,
}

impl FromStr for Demangle {
    type Err = ParseDemangleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "simplified" => Ok(Self::Simplified),
            "templates" => Ok(Self::Templates),
            "full" => Ok(Self::Full),
            _ => Err(ParseDemangleError { mode: s.to_owned() }),
        }
    }
}

impl fmt::Display for Demangle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Simplified => "simplified",
            Self::Templates => "templates",
            Self::Full => "full",
        })
    }
}

/// Demangles `name` per `mode`. Names that are not Rust or C++ manglings (C, Go, …) and names
/// that fail to demangle are returned unchanged.
///
/// ```
/// use pyro_symbolize::{Demangle, demangle};
///
/// let rust = "_ZN4core3ptr13drop_in_place17h0123456789abcdefE";
/// assert_eq!(demangle(rust, Demangle::Full), "core::ptr::drop_in_place");
/// assert_eq!(demangle(rust, Demangle::None), rust);
/// assert_eq!(demangle("_ZNSt6vectorIiSaIiEE9push_backERKi", Demangle::Simplified), "std::vector::push_back");
/// ```
pub fn demangle(name: &str, mode: Demangle) -> Cow<'_, str> {
    if mode == Demangle::None {
        return Cow::Borrowed(name);
    }
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        let s = format!("{d:#}");
        return Cow::Owned(match mode {
            Demangle::Simplified => strip_generics(&s, Lang::Rust),
            _ => s,
        });
    }
    if name.starts_with("_Z")
        && let Some(s) = demangle_cpp(name, mode)
    {
        return Cow::Owned(s);
    }
    Cow::Borrowed(name)
}

fn demangle_cpp(name: &str, mode: Demangle) -> Option<String> {
    use cpp_demangle::{DemangleOptions, Symbol};
    let sym = Symbol::new(name.as_bytes()).ok()?;
    let opts = match mode {
        Demangle::Full => DemangleOptions::new(),
        _ => DemangleOptions::new().no_params().no_return_type(),
    };
    let mut s = sym.demangle_with_options(&opts).ok()?;
    if let Some(i) = s.find(" [clone") {
        s.truncate(i);
    }
    Some(match mode {
        Demangle::Simplified => strip_generics(&s, Lang::Cpp),
        _ => s,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Cpp,
}

/// Removes template/generic argument lists (`<…>`, and Rust's `::<…>`), keeping C++ operator
/// names (`operator<<`) and Rust qualified paths (`<T as Trait>::f`).
fn strip_generics(s: &str, lang: Lang) -> String {
    let mut out = String::with_capacity(s.len());
    // One entry per open `<`: whether it is being stripped.
    let mut stack: Vec<bool> = Vec::new();
    let mut skipping = 0usize;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if lang == Lang::Cpp && skipping == 0 && rest.starts_with("operator") {
            let op_len = "operator".len()
                + rest["operator".len()..]
                    .find(|c: char| !"<>=-!+*/%&|^~".contains(c))
                    .unwrap_or(rest.len() - "operator".len());
            out.push_str(&rest[..op_len]);
            rest = &rest[op_len..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match c {
            '<' => {
                let generic = match lang {
                    Lang::Cpp => true,
                    Lang::Rust => {
                        skipping > 0
                            || out.ends_with("::")
                            || out
                                .chars()
                                .next_back()
                                .is_some_and(|p| p.is_alphanumeric() || p == '_')
                    }
                };
                if generic {
                    if skipping == 0 && out.ends_with("::") {
                        out.truncate(out.len() - 2);
                    }
                    skipping += 1;
                } else {
                    out.push(c);
                }
                stack.push(generic);
            }
            '>' => match stack.pop() {
                Some(true) => skipping -= 1,
                Some(false) => out.push(c),
                // Unbalanced: keep as is.
                None => out.push(c),
            },
            _ if skipping > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        for m in ["none", "simplified", "templates", "full"] {
            assert_eq!(m.parse::<Demangle>().unwrap().to_string(), m);
        }
        assert_eq!(
            "Full".parse::<Demangle>(),
            Err(ParseDemangleError {
                mode: "Full".into()
            })
        );
        assert_eq!(Demangle::default(), Demangle::None);
    }

    #[test]
    fn rust_legacy() {
        // <alloc::vec::Vec<T> as core::ops::drop::Drop>::drop (legacy mangling, hash included).
        let n = "_ZN70_$LT$alloc..vec..Vec$LT$T$C$A$GT$$u20$as$u20$core..ops..drop..Drop$GT$4drop17h5f9d3c7a8b2e1f00E";
        assert_eq!(demangle(n, Demangle::None), n);
        assert_eq!(
            demangle(n, Demangle::Full),
            "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop"
        );
        assert_eq!(
            demangle(n, Demangle::Templates),
            "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop"
        );
        assert_eq!(
            demangle(n, Demangle::Simplified),
            "<alloc::vec::Vec as core::ops::drop::Drop>::drop"
        );
    }

    #[test]
    fn rust_v0() {
        // From rustc-demangle's own tests: `std::panicking::try::<(), closure>` style generics.
        let n = "_RINvNtC3std3mem8align_ofdE";
        assert_eq!(demangle(n, Demangle::Full), "std::mem::align_of::<f64>");
        assert_eq!(demangle(n, Demangle::Simplified), "std::mem::align_of");
        let n = "_RNvNvMCs4fqI2P2rA04_13const_genericINtB4_3FooKpE3foo3FOO";
        assert_eq!(
            demangle(n, Demangle::Templates),
            "<const_generic::Foo<_>>::foo::FOO"
        );
        assert_eq!(
            demangle(n, Demangle::Simplified),
            "<const_generic::Foo>::foo::FOO"
        );
    }

    #[test]
    fn cpp() {
        let n = "_ZNSt6vectorIiSaIiEE9push_backERKi";
        assert_eq!(demangle(n, Demangle::None), n);
        assert_eq!(
            demangle(n, Demangle::Full),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(
            demangle(n, Demangle::Templates),
            "std::vector<int, std::allocator<int> >::push_back"
        );
        assert_eq!(demangle(n, Demangle::Simplified), "std::vector::push_back");
        // Template function with return type, and a clone suffix.
        let n = "_Z3maxIiET_S0_S0_.cold";
        assert_eq!(demangle(n, Demangle::Full), "int max<int>(int, int)");
        assert_eq!(demangle(n, Demangle::Templates), "max<int>");
        assert_eq!(demangle(n, Demangle::Simplified), "max");
        // Operators survive simplification.
        let n = "_ZlsRSoRK3Foo";
        assert_eq!(demangle(n, Demangle::Simplified), "operator<<");
        let n = "_ZN3FooltERKS_";
        assert_eq!(demangle(n, Demangle::Simplified), "Foo::operator<");
    }

    #[test]
    fn plain_names_untouched() {
        for mode in [
            Demangle::None,
            Demangle::Simplified,
            Demangle::Templates,
            Demangle::Full,
        ] {
            assert_eq!(demangle("main", mode), "main");
            assert_eq!(demangle("runtime.mallocgc", mode), "runtime.mallocgc");
            assert_eq!(demangle("_Zgarbage", mode), "_Zgarbage");
            assert_eq!(demangle("", mode), "");
        }
    }
}
