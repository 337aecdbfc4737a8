"""The finance back office's screens that are not ModelAdmins: dashboard, CSV export, bulk issue,
and the forms and confirmation views behind the grant and invoice admin actions."""
