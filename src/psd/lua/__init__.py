"""The Redis Lua scripts, installed as the resource package ``psd.lua``."""
