"""ComfyUI entry point of the EmoCAST node pack.

ComfyUI imports this file from `custom_nodes/<pack>/`; the nodes themselves live in `nodes/`
(thin glue) and the model code in `emocast/` (plain PyTorch, no ComfyUI import). Imported outside
ComfyUI (no `folder_paths` module: e.g. pytest collecting the repository), it registers nothing.
"""
try:
    import folder_paths  # noqa: F401  (always present inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
