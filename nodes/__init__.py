"""EmoCAST nodes for ComfyUI: one module per node family, assembled here."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
