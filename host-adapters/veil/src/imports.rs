//! `veil imports COMPONENT`: the component's top-level imports, one per line, as `wasmparser`
//! reads them (no compilation). tests/integration/test_spin.py checks them against what Spin 3.x
//! provides.

use anyhow::{Context, Result};
use wasmparser::{Parser, Payload};

use crate::cli::ImportsArgs;

/// The names a component imports at its top level (not those of nested components or modules).
pub fn component_imports(bytes: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    // Nesting: the outer component is depth 1; nested modules and components go deeper.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("not a WebAssembly component")? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != wasmparser::Encoding::Component {
                    anyhow::bail!("a core module, not a component");
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    names.push(import.context("malformed import section")?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

pub fn run(args: ImportsArgs) -> Result<()> {
    let bytes = std::fs::read(&args.component)
        .map_err(|e| crate::ConfigError(format!("cannot read {}: {e}", args.component.display())))?;
    for name in component_imports(&bytes).with_context(|| args.component.display().to_string())? {
        println!("{name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::component_imports;

    #[test]
    fn a_core_module_or_junk_is_refused() {
        // The empty core module: magic, version 1.
        let module = b"\0asm\x01\0\0\0";
        assert!(component_imports(module).unwrap_err().to_string().contains("core module"));
        assert!(component_imports(b"junk").is_err());
    }
}
