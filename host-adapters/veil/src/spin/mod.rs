//! Host implementations of the Spin interfaces the component imports (`spin:sqlite`,
//! `spin:postgres`, variables (`fermyon:spin/variables` and `wasi:config/store`), key-value).

pub mod key_value;
pub mod postgres;
pub mod sqlite;
pub mod variables;

use wasmtime::component::Linker;

/// Bindings generated from the unmodified Spin WIT in `wit/deps`.
pub mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package veil:host;
            world spin-imports {
                import spin:sqlite/sqlite@3.0.0;
                import spin:postgres/postgres@4.0.0;
                import fermyon:spin/variables@2.0.0;
                import fermyon:spin/key-value@2.0.0;
                import wasi:config/store@0.2.0-draft-2024-09-27;
            }
        ",
        path: [
            "../../wit/deps/spin-sqlite@3.0.0",
            "../../wit/deps/spin-postgres@4.0.0",
            "../../wit/deps/spin@2.0.0",
            "../../wit/deps/wasi-config@0.2.0-draft-2024-09-27",
        ],
        imports: {
            "spin:sqlite/sqlite.[static]connection.open": async,
            "spin:sqlite/sqlite.[method]connection.execute": async,
            "spin:postgres/postgres.[static]connection.open": async,
            "spin:postgres/postgres.[method]connection.query": async,
            "spin:postgres/postgres.[method]connection.execute": async,
        },
        with: {
            "spin:sqlite/sqlite.connection": crate::spin::sqlite::Connection,
            "spin:postgres/postgres.connection": crate::spin::postgres::Connection,
            "fermyon:spin/key-value.store": crate::spin::key_value::Store,
        },
    });
}

/// Gives the Spin host implementations access to a store's per-instance state.
pub trait SpinView: Send {
    fn sqlite(&mut self) -> sqlite::SqliteView<'_>;
    fn postgres(&mut self) -> postgres::PgView<'_>;
    fn variables(&mut self) -> variables::VariablesView<'_>;
    fn key_value(&mut self) -> key_value::KeyValueView<'_>;
}

/// Adds `spin:sqlite/sqlite@3.0.0`, `spin:postgres/postgres@4.0.0`,
/// `fermyon:spin/variables@2.0.0`, `wasi:config/store@0.2.0-draft-2024-09-27` and
/// `fermyon:spin/key-value@2.0.0` to `linker`.
pub fn add_to_linker<T: SpinView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::spin::sqlite::sqlite::add_to_linker::<T, sqlite::Sqlite>(linker, T::sqlite)?;
    bindings::spin::postgres::postgres::add_to_linker::<T, postgres::Postgres>(linker, T::postgres)?;
    bindings::fermyon::spin::variables::add_to_linker::<T, variables::Variables>(linker, T::variables)?;
    bindings::wasi::config::store::add_to_linker::<T, variables::Variables>(linker, T::variables)?;
    bindings::fermyon::spin::key_value::add_to_linker::<T, key_value::KeyValue>(linker, T::key_value)?;
    Ok(())
}
