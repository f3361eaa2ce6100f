-- The file's top level never returns.
while true do end
