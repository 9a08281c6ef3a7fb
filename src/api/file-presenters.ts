/** The file operations' results on the wire (snake_case, the original project's names), for every front end. */
import type { Listing, StoredFile } from './file-operations.js';

/** As /write_file and /upload_file answer (and the MCP tools' structured content). */
export function storedToWire(f: StoredFile) {
  return { status: 'success' as const, sandbox_id: f.sandboxId, remote_path: f.path, size: f.size };
}

/** As /list_files answers (and the MCP list_files tool's structured content). */
export function listingToWire(l: Listing) {
  return {
    sandbox_id: l.sandboxId,
    path: l.path,
    truncated: l.truncated,
    entries: l.entries.map((e) => ({
      name: e.name,
      path: e.path,
      type: e.type,
      size: e.size,
      modified_at: new Date(e.modifiedMs).toISOString(),
    })),
  };
}
