-- expire: see lib.lua for KEYS and ARGV.
return run('expire')
