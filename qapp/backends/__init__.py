"""Store backends that need a driver, one module each, imported lazily by URL scheme."""
