//! `leadership release`: the operator's escape hatch, refused unless the process holds the
//! flag. By default a revoke (no overlap with a live holder); `--now` for a dead one.

use crate::args::Release;
use crate::exit::{Failure, NOT_HOLDER};

pub async fn release(args: Release) -> Result<i32, Failure> {
    let inspector = crate::flag::inspect(&args.connection, None, args.timeout).await?;
    let done = if args.now {
        inspector.release_now(&args.name, &args.process).await?
    } else {
        inspector.revoke(&args.name, &args.process).await?
    };
    if let Some(version) = done {
        if args.now {
            println!(
                "released {:?} held by {:?} (now version {version}); the next process leads at once",
                args.name, args.process
            );
        } else {
            println!(
                "revoked {:?} from {:?} (now version {version}); it steps down at its next renew, \
                 and the next process leads once the lease has run out",
                args.name, args.process
            );
        }
        return Ok(0);
    }
    let holder = inspector
        .flags(Some(&args.name))
        .await?
        .into_iter()
        .next()
        .map(|(_, h)| h.name);
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
