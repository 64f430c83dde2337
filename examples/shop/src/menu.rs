//! The interactive menu: numbered choices, prompts for each field, the same commands as the
//! subcommands. Reads lines from stdin, so it also works when stdin is a pipe or a file.

use std::io::Write as _;
use std::path::PathBuf;

use shop::domain::{parse_money, OrderStatus};
use sourceflow::EntityId;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use crate::cli::{print_error, run_command, Command, EntityKind, Session, ViewName};
use crate::output::{bold, dim, say};

const MENU: &str = concat!(
    "  Commands                  Queries                      Admin\n",
    "   1  Place an order         7  List orders              12  Raw events\n",
    "   2  Add an item            8  Show an order            13  Replay an order\n",
    "   3  Remove an item         9  A customer's orders      14  Rebuild the views\n",
    "   4  Confirm an order      10  Products and stock       15  Export to a file\n",
    "   5  Cancel an order       11  Statistics               16  Import from a file\n",
    "   6  Restock a product                                  17  Generate sample orders\n",
    "   0  Quit                  ?  This menu                 18  Forget a customer",
);

/// Lines typed by the user.
struct Input {
    lines: Lines<BufReader<Stdin>>,
}

impl Input {
    /// Asks for a line; `None` at the end of input.
    async fn ask(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        let mut out = std::io::stdout().lock();
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        drop(out);
        let line = self.lines.next_line().await?;
        Ok(line.map(|l| l.trim().to_owned()))
    }

    /// Asks with a default shown in brackets, used when the answer is empty.
    async fn ask_or(&mut self, prompt: &str, default: &str) -> anyhow::Result<Option<String>> {
        let shown = if default.is_empty() {
            format!("{prompt}: ")
        } else {
            format!("{prompt} [{default}]: ")
        };
        Ok(self.ask(&shown).await?.map(|answer| {
            if answer.is_empty() {
                default.to_owned()
            } else {
                answer
            }
        }))
    }
}

/// What one choice produced.
enum Step {
    /// A command to run.
    Run(Command),
    /// Nothing to run (help shown, input refused).
    Skip,
    /// Leave the menu.
    Quit,
}

/// Runs the menu until the user quits or input ends.
///
/// # Errors
/// Only failures to read stdin or write stdout; command errors are printed and the menu goes on.
pub async fn run(session: &Session) -> anyhow::Result<()> {
    let mut input = Input {
        lines: BufReader::new(tokio::io::stdin()).lines(),
    };
    say!(
        "{}",
        bold(&format!("sourceflow shop on {}", session.target))
    );
    say!("{MENU}");
    let mut current: Option<EntityId> = None;
    loop {
        let Some(choice) = input.ask("\nchoose 0-18 (? for the menu): ").await? else {
            break;
        };
        let step = match choose(&mut input, &choice, current.as_ref()).await {
            Ok(Some(step)) => step,
            Ok(None) => break,
            Err(e) => {
                print_error(&e);
                Step::Skip
            }
        };
        match step {
            Step::Quit => break,
            Step::Skip => {}
            Step::Run(command) => match run_command(session, command).await {
                Ok(Some(order)) => current = Some(order),
                Ok(None) => {}
                Err(e) => print_error(&e),
            },
        }
    }
    say!("bye");
    Ok(())
}

/// Turns a menu choice into a command, asking for its fields. `None`: input ended.
async fn choose(
    input: &mut Input,
    choice: &str,
    current: Option<&EntityId>,
) -> anyhow::Result<Option<Step>> {
    let order_default = current.map(|id| id.to_string()).unwrap_or_default();
    macro_rules! ask {
        ($prompt:expr) => {
            match input.ask_or($prompt, "").await? {
                Some(answer) => answer,
                None => return Ok(None),
            }
        };
        ($prompt:expr, $default:expr) => {
            match input.ask_or($prompt, $default).await? {
                Some(answer) => answer,
                None => return Ok(None),
            }
        };
    }
    let step = match choice {
        "0" | "q" | "quit" | "exit" => Step::Quit,
        "" | "?" | "h" | "help" => {
            say!("{MENU}");
            Step::Skip
        }
        "1" => {
            let customer = ask!("customer id");
            let name = ask!("deliver to: name (empty: no delivery contact)");
            let (address, email) = if name.is_empty() {
                (String::new(), String::new())
            } else {
                (ask!("deliver to: address"), ask!("e-mail"))
            };
            let given = |field: String| (!field.is_empty()).then_some(field);
            Step::Run(Command::PlaceOrder {
                customer,
                id: None,
                name: given(name),
                address: given(address),
                email: given(email),
            })
        }
        "2" => {
            let order = ask!("order id", &order_default);
            let sku = ask!("product SKU (see 10)");
            let quantity = number(&ask!("quantity", "1"))?;
            let price = ask!("price per unit (empty: list price)");
            let price = if price.is_empty() {
                None
            } else {
                Some(parse_money(&price).map_err(anyhow::Error::msg)?)
            };
            Step::Run(Command::AddItem {
                order,
                sku,
                quantity,
                price,
            })
        }
        "3" => {
            let order = ask!("order id", &order_default);
            let sku = ask!("product SKU");
            let quantity = ask!("quantity (empty: the whole line)");
            let quantity = if quantity.is_empty() {
                None
            } else {
                Some(number(&quantity)?)
            };
            Step::Run(Command::RemoveItem {
                order,
                sku,
                quantity,
            })
        }
        "4" => Step::Run(Command::Confirm {
            order: ask!("order id", &order_default),
        }),
        "5" => Step::Run(Command::Cancel {
            order: ask!("order id", &order_default),
            reason: ask!("reason"),
        }),
        "6" => Step::Run(Command::Restock {
            sku: ask!("product SKU"),
            quantity: number(&ask!("units delivered"))?,
        }),
        "7" => {
            let status = ask!("status (draft, confirmed, paid, cancelled; empty: all)");
            let status = if status.is_empty() {
                None
            } else {
                Some(status.parse::<OrderStatus>().map_err(anyhow::Error::msg)?)
            };
            let customer = ask!("customer (empty: all)");
            Step::Run(Command::Orders {
                status,
                customer: (!customer.is_empty()).then_some(customer),
                limit: 20,
                all: false,
            })
        }
        "8" => Step::Run(Command::Order {
            id: ask!("order id", &order_default),
        }),
        "9" => Step::Run(Command::Customer {
            id: ask!("customer id"),
        }),
        "10" => Step::Run(Command::Products),
        "11" => Step::Run(Command::Stats),
        "12" => {
            let stream = ask!("stream, TYPE/ID or an id (empty: all)");
            let event_type = ask!("event type, e.g. OrderPlaced (empty: all)");
            let last = number(&ask!("how many of the latest", "20"))?;
            Step::Run(Command::Events {
                stream: (!stream.is_empty()).then_some(stream),
                event_type: (!event_type.is_empty()).then_some(event_type),
                since: None,
                limit: None,
                last: Some(last as usize),
            })
        }
        "13" => Step::Run(Command::Replay {
            id: ask!("order id", &order_default),
            entity: EntityKind::Order,
            at: None,
        }),
        "14" => Step::Run(Command::Rebuild {
            view: Some(ViewName::All),
        }),
        "15" => Step::Run(Command::Export {
            file: PathBuf::from(ask!("file", "shop-export.jsonl")),
        }),
        "16" => {
            say!(
                "{}",
                dim("import loads an export into an empty database (start the menu with --db NEW.db)")
            );
            Step::Run(Command::Import {
                file: PathBuf::from(ask!("file", "shop-export.jsonl")),
            })
        }
        "17" => {
            let orders = number(&ask!("orders", "100"))?;
            let seed = ask!("seed (empty: random)");
            let seed = if seed.is_empty() {
                None
            } else {
                Some(
                    seed.parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("{seed:?} is not a seed (a whole number)"))?,
                )
            };
            Step::Run(Command::Seed {
                orders: orders as usize,
                seed,
                jobs: 1,
            })
        }
        "18" => {
            say!(
                "{}",
                dim("the customer's name, address and e-mail become unreadable for good; their orders stay")
            );
            Step::Run(Command::Forget {
                customer: ask!("customer id"),
            })
        }
        other => {
            say!("{other:?} is not on the menu; ? shows it");
            Step::Skip
        }
    };
    Ok(Some(step))
}

fn number(text: &str) -> anyhow::Result<u32> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a whole number"))
}
