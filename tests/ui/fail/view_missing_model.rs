use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Deposited;

#[derive(Default)]
struct SummaryView;

#[view]
impl SummaryView {
    #[projects_on]
    async fn deposited(&self, _e: &Deposited, _cx: &mut ViewContext) {}
}

fn main() {}
