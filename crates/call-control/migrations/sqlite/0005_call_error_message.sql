-- What went wrong with a call when its end_reason alone does not say it
-- (the OS error of a trunk that could not be reached).
ALTER TABLE calls ADD COLUMN error_message TEXT;
