use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Default, Clone, Serialize, Deserialize, ViewModel)]
struct Summary;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Deposit;

#[derive(Default)]
struct SummaryView;

#[view(model = Summary)]
impl SummaryView {
    #[projects_on]
    async fn deposit(&self, _summary: &mut Summary, _cmd: &Deposit) {}
}

fn main() {}
