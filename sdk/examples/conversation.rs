//! A conversation through the SDK against a running server, printed as a transcript:
//! Alice with two devices, Bob with three (his third added midway), messages both ways,
//! a device that was offline catching up, and the added device receiving only what was
//! sent after it joined.
//!
//! `scripts/demo.sh` starts a server and runs this; by hand:
//! `cargo run -p courier-sdk --example conversation -- http://127.0.0.1:8080`

// A transcript is the point of this program.
#![allow(clippy::print_stdout)]

use std::error::Error;

use courier_protocol::api::keys::DeviceRef;
use courier_sdk::client::Client;
use courier_sdk::crypto::Event;
use courier_sdk::store::StoreKey;
use url::Url;

struct Device {
    name: String,
    client: Client,
}

impl Device {
    /// Connects, stores what waits, and prints the messages it got.
    async fn receive(&self, names: &[(DeviceRef, String)]) -> Result<usize, Box<dyn Error>> {
        self.client.receive_until_caught_up().await?;
        let events = self.client.pending_events(1_000).await?;
        let mut count = 0;
        for queued in &events {
            if let Event::Message { message } = &queued.event {
                let from = names
                    .iter()
                    .find(|(d, _)| *d == message.sender)
                    .map_or("?", |(_, n)| n.as_str());
                let copy = if message.from_own_device {
                    " (sent from another device of the same user)"
                } else {
                    ""
                };
                println!(
                    "    {:<8} got  {:?} from {from}{copy}",
                    self.name,
                    String::from_utf8_lossy(&message.body)
                );
                count += 1;
            }
        }
        if let Some(last) = events.last() {
            self.client.confirm_events(last.seq).await?;
        }
        if count == 0 {
            println!("    {:<8} got  nothing", self.name);
        }
        Ok(count)
    }
}

fn add(
    client: Client,
    name: &str,
    devices: &mut Vec<Device>,
    names: &mut Vec<(DeviceRef, String)>,
) {
    names.push((client.own_device(), name.to_owned()));
    devices.push(Device {
        name: name.to_owned(),
        client,
    });
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let server: Url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
        .parse()?;
    let dir = tempfile::tempdir()?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let password = "correct horse battery";
    // In an app this key comes from the Keychain or Keystore.
    let key = StoreKey::from_bytes(rand::random());

    let mut devices: Vec<Device> = Vec::new();
    let mut names: Vec<(DeviceRef, String)> = Vec::new();
    println!("== Alice registers with two devices, Bob with two (his third comes later)");
    let (alice_name, bob_name) = (format!("alice-{suffix}"), format!("bob-{suffix}"));
    for (user, count, register) in [(&alice_name, 2, true), (&bob_name, 2, true)] {
        for i in 1..=count {
            let path = dir.path().join(format!("{user}-{i}.db"));
            let client = if register && i == 1 {
                Client::register(
                    server.clone(),
                    &path,
                    &key,
                    user,
                    password,
                    &format!("device {i}"),
                    None,
                )
                .await?
            } else {
                Client::login(
                    server.clone(),
                    &path,
                    &key,
                    user,
                    password,
                    &format!("device {i}"),
                )
                .await?
            };
            let name = format!("{}/{i}", &user[..user.find('-').unwrap_or(user.len())]);
            println!(
                "    {name:<8} logged in as device {} (assigned by the server)",
                client.own_device().device_id.get()
            );
            add(client, &name, &mut devices, &mut names);
        }
    }
    let (alice, bob) = (
        devices[0].client.own_device().user_id,
        devices[2].client.own_device().user_id,
    );

    println!("\n== alice/1 writes to Bob; bob/2 is offline");
    devices[0].client.send(bob, b"Hi Bob! Lunch today?").await?;
    devices[2].receive(&names).await?;
    devices[1].receive(&names).await?;

    println!("\n== bob/1 answers; both of Alice's devices get it");
    devices[2]
        .client
        .send(alice, b"Sure, noon at the usual place.")
        .await?;
    devices[0].receive(&names).await?;
    devices[1].receive(&names).await?;

    println!("\n== alice/2 sends two more while bob/2 is still offline");
    devices[1]
        .client
        .send(bob, b"Great, see you there.")
        .await?;
    devices[1]
        .client
        .send(bob, b"I'll bring the report.")
        .await?;
    devices[2].receive(&names).await?;
    devices[0].receive(&names).await?;

    println!("\n== bob/2 comes back online and catches up, in order");
    devices[3].receive(&names).await?;

    println!("\n== Bob adds a third device midway");
    let path = dir.path().join("bob-3.db");
    let third = Client::login(server.clone(), &path, &key, &bob_name, password, "device 3").await?;
    println!(
        "    bob/3    logged in as device {}",
        third.own_device().device_id.get()
    );
    add(third, "bob/3", &mut devices, &mut names);
    devices[4].receive(&names).await?;

    println!("\n== alice/1 writes again: every current device gets it, bob/3 included");
    devices[0].client.send(bob, b"Welcome, new device!").await?;
    for index in [2, 3, 4, 1] {
        devices[index].receive(&names).await?;
    }

    println!("\n== bob/3 replies");
    devices[4]
        .client
        .send(alice, b"Thanks, all three of my devices are here.")
        .await?;
    for index in [0, 1, 2, 3] {
        devices[index].receive(&names).await?;
    }

    for (index, user) in [(0, alice), (0, bob), (2, alice), (2, bob)] {
        devices[index].client.refresh_devices(user).await?;
    }
    let seen_by_alice = devices[0].client.safety_number(bob).await?;
    let seen_by_bob = devices[2].client.safety_number(alice).await?;
    println!("\n== safety number, as alice/1 sees it: {seen_by_alice}");
    println!("   and as bob/1 sees it:             {seen_by_bob}");
    println!(
        "   {}",
        if seen_by_alice == seen_by_bob {
            "they match"
        } else {
            "THEY DIFFER"
        }
    );
    Ok(())
}
