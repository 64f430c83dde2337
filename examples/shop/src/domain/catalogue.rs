//! The fixed product catalogue: what the shop sells, at which list price, and how many units
//! each stock entity starts with.
//!
//! A real shop would keep products in their own entity (or another service); a constant table
//! keeps the example about orders, stock and payments.

/// One product the shop sells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    /// Stock keeping unit: the product's id, and the id of its `Stock` entity.
    pub sku: &'static str,
    /// Name shown to people.
    pub name: &'static str,
    /// List price in cents.
    pub price: i64,
    /// Units in the warehouse before the first reservation.
    pub opening_stock: u32,
}

/// Everything the shop sells.
pub const CATALOGUE: &[Product] = &[
    Product {
        sku: "TEA-SENCHA",
        name: "Sencha green tea, 100 g",
        price: 850,
        opening_stock: 500,
    },
    Product {
        sku: "TEA-ASSAM",
        name: "Assam black tea, 100 g",
        price: 650,
        opening_stock: 500,
    },
    Product {
        sku: "TEA-EARLGREY",
        name: "Earl Grey, 100 g",
        price: 700,
        opening_stock: 500,
    },
    Product {
        sku: "MUG-STONE",
        name: "Stoneware mug",
        price: 1_200,
        opening_stock: 200,
    },
    Product {
        sku: "FILTER-100",
        name: "Paper tea filters, 100",
        price: 300,
        opening_stock: 1_000,
    },
    Product {
        sku: "POT-CAST",
        name: "Cast-iron teapot",
        price: 4_500,
        opening_stock: 50,
    },
    Product {
        sku: "KETTLE-GOOSE",
        name: "Gooseneck kettle",
        price: 6_900,
        opening_stock: 30,
    },
    Product {
        sku: "POT-LIMITED",
        name: "Limited-edition teapot",
        price: 12_000,
        opening_stock: 3,
    },
];

/// The product with this SKU (exact, upper case), if the shop sells it.
pub fn product(sku: &str) -> Option<&'static Product> {
    CATALOGUE.iter().find(|p| p.sku == sku)
}

/// The SKUs, comma separated, for error messages that list what is valid.
pub fn known_skus() -> String {
    CATALOGUE
        .iter()
        .map(|p| p.sku)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Formats cents as a decimal amount (`1234` -> `"12.34"`).
pub fn format_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a decimal amount into cents (`"12.5"` -> `1250`, `"-3"` -> `-300`).
///
/// Negative amounts parse on purpose: whether an amount is acceptable is the commands'
/// validation's business, which reports it with the field name and stores nothing.
///
/// # Errors
/// A message saying what is malformed (not a number, more than two decimals, too large).
pub fn parse_money(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 2
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return Err(format!(
            "{text:?} is not an amount: write it like 12.50 (at most two decimals)"
        ));
    }
    let whole: i64 = whole
        .parse()
        .ok()
        .filter(|w: &i64| *w <= 1_000_000_000)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    let fraction: i64 = format!("{fraction:0<2}").parse().unwrap_or(0);
    let cents = whole * 100 + fraction;
    Ok(if negative { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_unique_and_upper_case() {
        for (i, p) in CATALOGUE.iter().enumerate() {
            assert_eq!(p.sku, p.sku.to_uppercase());
            assert!(CATALOGUE[i + 1..].iter().all(|q| q.sku != p.sku));
            assert!(p.price > 0);
        }
    }

    #[test]
    fn money_round_trips() {
        assert_eq!(format_money(1234), "12.34");
        assert_eq!(format_money(-5), "-0.05");
        assert_eq!(parse_money("12.5"), Ok(1250));
        assert_eq!(parse_money("7"), Ok(700));
        assert_eq!(parse_money("-1.00"), Ok(-100));
        assert!(parse_money("1.234").is_err());
        assert!(parse_money("abc").is_err());
        assert!(parse_money("").is_err());
    }
}
