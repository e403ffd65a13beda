//! `leadership release`: the operator's escape hatch, refused unless the process holds the flag.

use crate::args::Release;
use crate::connect::{connect, table};
use crate::exit::{Failure, FAILURE, NOT_HOLDER};
use leadership_core::sql::Statements;
use leadership_tokio::internal::Chain;

pub async fn release(args: Release) -> Result<i32, Failure> {
    let client = connect(&args.connection).await?;
    let statements = Statements::new(&table(&args.connection)?);
    let failed = |e: tokio_postgres::Error| Failure::new(FAILURE, Chain(&e).to_string());
    let rows = client
        .query(
            &statements.force_release,
            &[&args.name, &args.process, &statements.channel],
        )
        .await
        .map_err(failed)?;
    if let Some(row) = rows.first() {
        let version: i64 = row.get("version");
        println!(
            "released {:?} held by {:?} (now version {version})",
            args.name, args.process
        );
        return Ok(0);
    }
    let holder = client
        .query(&statements.status, &[&Some(args.name.as_str())])
        .await
        .map_err(failed)?
        .first()
        .map(|row| row.get::<_, Option<String>>("holder"));
    let why = match holder {
        None => format!("there is no flag {:?}", args.name),
        Some(holder) => format!(
            "{:?} does not hold {:?} (the holder is {})",
            args.process,
            args.name,
            holder.map_or("NULL".to_string(), |h| format!("{h:?}"))
        ),
    };
    Err(Failure::new(NOT_HOLDER, why))
}
