"""Style presets: each server's named styles, kept by its admins (/sdadmin styles), applied by /imagine style:."""
