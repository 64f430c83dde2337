use serde::{Deserialize, Serialize};
use sourceflow::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
struct Ping;

#[derive(Default)]
struct Pinger;

#[saga]
impl Pinger {
    #[handles]
    async fn ping(&self, _cmd: &Ping, _cx: &SagaContext) {}
}

fn main() {}
